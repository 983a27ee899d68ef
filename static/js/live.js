// Live state: the server pushes "VM x changed" over a websocket; the page
// re-fetches its own partial (the VM block, or the VM table) and swaps it in.
// A page with usage graphs asks to hear about new readings of its VM's (or
// node's) usage, and gets a "live:usage" event on the document for each.
(() => {
  const vmBlock = document.querySelector("[data-live-vm]");
  const listBlock = document.querySelector("[data-live-list]");
  const usageBlock = document.querySelector("[data-usage-url]");
  if (!vmBlock && !listBlock && !usageBlock) return;

  function refresh(block) {
    htmx.ajax("GET", block.dataset.liveUrl, { target: block, swap: "innerHTML" });
  }

  function changed(vm) {
    if (vmBlock && vmBlock.dataset.liveVm === vm) refresh(vmBlock);
    if (listBlock && listBlock.querySelector(`[data-vm="${CSS.escape(vm)}"]`)) refresh(listBlock);
  }

  let delay = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/live/`);
    socket.onopen = () => {
      // Catch up on whatever changed between rendering the page (or losing the
      // socket) and listening now: an operation may have finished meanwhile.
      if (vmBlock) refresh(vmBlock);
      if (listBlock) refresh(listBlock);
      if (usageBlock) {
        const { usageVm, usageNode } = usageBlock.dataset;
        socket.send(JSON.stringify({ usage: usageVm ? { vm: usageVm } : { node: Number(usageNode) } }));
        document.dispatchEvent(new CustomEvent("live:usage"));
      }
      delay = 1000;
      document.documentElement.dataset.live = "connected";
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.vm) changed(message.vm);
      if (message.usage !== undefined) document.dispatchEvent(new CustomEvent("live:usage"));
    };
    socket.onclose = () => {
      document.documentElement.dataset.live = "disconnected";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  window.addEventListener("load", connect);
})();
