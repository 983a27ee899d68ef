// The serial console: xterm.js over the panel's websocket (vms/consumers.py).
(() => {
  const status = document.getElementById("console-status");
  const takeover = document.getElementById("btn-takeover");
  const term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  const screen = document.getElementById("terminal");
  term.open(screen);
  fit.fit();
  window.addEventListener("resize", () => fit.fit());
  const encoder = new TextEncoder();
  const reasons = {
    4404: "This VM does not exist.",
    4409: "The serial console is open in another window.",
    4503: "The VM's node did not answer, or the VM is not running.",
    4000: "The console ended: the VM stopped, or another window took it over.",
    4401: "Your session has ended: sign in again to use the console.",
  };
  let socket = null;

  function setStatus(state, text) {
    const styles = { connecting: "text-bg-info", connected: "text-bg-success", disconnected: "text-bg-danger" };
    status.className = `badge ${styles[state]}`;
    status.dataset.status = state;
    status.textContent = text;
  }

  function connect(force) {
    if (socket) { socket.onclose = null; socket.close(); }
    setStatus("connecting", "Connecting…");
    takeover.classList.add("d-none");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${screen.dataset.socketPath}${force ? "?force=1" : ""}`);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => { setStatus("connected", "Connected"); term.options.cursorBlink = true; term.focus(); };
    socket.onmessage = (event) => term.write(new Uint8Array(event.data));
    socket.onclose = (event) => {
      const reason = reasons[event.code] || "Disconnected — press Reconnect";
      setStatus("disconnected", reason);
      if (event.code === 4409) takeover.classList.remove("d-none");
      // Make it plain that typing goes nowhere now.
      term.options.cursorBlink = false;
      term.write(`\r\n\x1b[2m[${reason}]\x1b[0m\r\n`);
    };
  }

  term.onData((data) => { if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data)); });
  document.getElementById("btn-reconnect").addEventListener("click", () => connect(false));
  takeover.addEventListener("click", () => connect(true));
  connect(false);
})();
