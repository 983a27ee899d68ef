// Live state: the server pushes "VM x changed" over a websocket; the page
// re-fetches its own partial (the VM block, or the VM table) and swaps it in,
// but only when its data-live-version differs: an identical refresh (the
// catch-up after the socket connects, say) replaces nothing, so a click on a
// button is never lost between the mouse going down and coming up.
// <html data-live> is "connected" once the socket is open and the catch-up
// refresh is done (tests wait for it before clicking), "refreshing" while a
// refresh is under way.
// A page with usage graphs asks to hear about new readings of its VM's (or
// node's) usage, and gets a "live:usage" event on the document for each.
// When the session ends (signed out elsewhere, password changed, account
// suspended) the server says why, and the page shows it instead of its content.
(() => {
  const vmBlock = document.querySelector("[data-live-vm]");
  const listBlock = document.querySelector("[data-live-list]");
  const usageBlock = document.querySelector("[data-usage-url]");
  const anyBlock = document.querySelector("[data-live-any]"); // follows every VM (the staff dashboard)
  if (!vmBlock && !listBlock && !usageBlock && !anyBlock) return;
  const root = document.documentElement;

  const versionOf = (element) => element.querySelector("[data-live-version]")?.dataset.liveVersion;

  async function fetchAndSwap(block) {
    const response = await fetch(block.dataset.liveUrl, {
      headers: { "HX-Request": "true", "HX-Current-URL": location.href },
      credentials: "same-origin",
    });
    const redirect = response.headers.get("HX-Redirect");
    if (redirect) {
      window.location.href = redirect; // the VM was deleted, or the session went idle
      return;
    }
    if (!response.ok) return;
    const fresh = document.createElement("div");
    fresh.innerHTML = await response.text();
    if (versionOf(fresh) && versionOf(fresh) === versionOf(block)) return; // nothing changed
    // Keep what the reader opened (e.g. "Show all" operations) across the swap.
    const open = [...block.querySelectorAll(".collapse.show[id]")].map((element) => element.id);
    block.replaceChildren(...fresh.childNodes);
    open.forEach((id) => block.querySelector(`#${CSS.escape(id)}`)?.classList.add("show"));
  }

  // One refresh at a time per block; changes told meanwhile make one more afterwards.
  const refreshing = new Map();
  function refresh(block) {
    const state = refreshing.get(block);
    if (state) {
      state.again = true;
      return state.done;
    }
    const entry = { again: false };
    entry.done = (async () => {
      root.dataset.refreshing = String((Number(root.dataset.refreshing) || 0) + 1);
      try {
        do {
          entry.again = false;
          try { await fetchAndSwap(block); } catch (error) { /* the next change refreshes again */ }
        } while (entry.again);
      } finally {
        refreshing.delete(block);
        const left = Number(root.dataset.refreshing) - 1;
        if (left) root.dataset.refreshing = String(left); else delete root.dataset.refreshing;
      }
    })();
    refreshing.set(block, entry);
    return entry.done;
  }

  function changed(vm) {
    if (vmBlock && vmBlock.dataset.liveVm === vm) refresh(vmBlock);
    if (listBlock && listBlock.querySelector(`[data-vm="${CSS.escape(vm)}"]`)) refresh(listBlock);
    if (anyBlock) refresh(anyBlock);
  }

  let delay = 1000;
  let signedOut = false;

  function showSignedOut(reason) {
    signedOut = true;
    const main = document.querySelector("main") || document.getElementById("content");
    const box = document.createElement("div");
    box.className = "alert alert-warning";
    box.id = "signed-out";
    box.setAttribute("role", "alert");
    const text = document.createElement("p");
    text.className = "mb-2";
    text.textContent = reason; // text only
    const link = document.createElement("a");
    link.className = "btn btn-primary btn-sm";
    link.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
    link.textContent = "Sign in";
    box.append(text, link);
    main.replaceChildren(box);
    document.querySelectorAll("nav .navbar-collapse").forEach((menu) => menu.remove());
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/live/`);
    socket.onopen = async () => {
      delay = 1000;
      if (usageBlock) {
        const { usageVm, usageNode } = usageBlock.dataset;
        socket.send(JSON.stringify({ usage: usageVm ? { vm: usageVm } : { node: Number(usageNode) } }));
        document.dispatchEvent(new CustomEvent("live:usage"));
      }
      // Catch up on whatever changed between rendering the page (or losing the
      // socket) and listening now: an operation may have finished meanwhile.
      await Promise.all([vmBlock, listBlock, anyBlock].filter(Boolean).map(refresh));
      if (socket.readyState === WebSocket.OPEN) root.dataset.live = "connected";
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.signed_out) showSignedOut(message.signed_out);
      if (message.vm) changed(message.vm);
      if (message.usage !== undefined) document.dispatchEvent(new CustomEvent("live:usage"));
    };
    socket.onclose = () => {
      root.dataset.live = "disconnected";
      if (signedOut) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  window.addEventListener("load", connect);
})();
