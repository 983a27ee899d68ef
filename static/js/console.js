// The graphical console (noVNC): a one-time ticket from the panel, then the bridge.
import RFB from "../vendor/novnc/core/rfb.js";
import { typeText, keysym } from "./keys.js";

const screen = document.getElementById("screen");
const tokenUrl = screen.dataset.tokenUrl;
const csrfToken = screen.dataset.csrf;
const status = document.getElementById("console-status");
const fitButton = document.getElementById("btn-fit");
let rfb = null;
let fit = true;

function setStatus(state, text) {
  const styles = { connecting: "text-bg-info", connected: "text-bg-success", disconnected: "text-bg-danger" };
  status.className = `badge ${styles[state]}`;
  status.dataset.status = state;
  status.textContent = text;  // text only: nothing from the guest becomes markup
  screen.dataset.connected = String(state === "connected");
}

async function connect() {
  if (rfb) {
    const old = rfb;
    rfb = null;  // its disconnect event below is then ignored: it is not the current connection
    old.disconnect();
  }
  setStatus("connecting", "Connecting…");
  let body;
  try {
    const response = await fetch(tokenUrl, { method: "POST", headers: { "X-CSRFToken": csrfToken } });
    body = await response.json();
    if (!response.ok) { setStatus("disconnected", body.error || "The console cannot be opened."); return; }
  } catch (error) {
    setStatus("disconnected", "The panel did not answer."); return;
  }
  const current = new RFB(screen, body.url);
  rfb = current;
  current.scaleViewport = fit;
  current.background = "#212529";
  current.addEventListener("connect", () => {
    if (current !== rfb) return;
    setStatus("connected", "Connected");
    current.focus();
  });
  current.addEventListener("disconnect", (event) => {
    if (current !== rfb) return;
    setStatus("disconnected", event.detail.clean ? "Disconnected" : "Connection lost — press Reconnect");
  });
  current.addEventListener("desktopname", (event) => { document.title = `${event.detail.name} · Console`; });
}

document.getElementById("btn-reconnect").addEventListener("click", connect);
fitButton.addEventListener("click", () => {
  fit = !fit;
  fitButton.classList.toggle("active", fit);
  fitButton.setAttribute("aria-pressed", String(fit));
  if (rfb) rfb.scaleViewport = fit;
});
document.getElementById("btn-fullscreen").addEventListener("click", () => screen.requestFullscreen());
document.getElementById("btn-cad").addEventListener("click", () => rfb && rfb.sendCtrlAltDel());
document.querySelectorAll("#key-menu [data-keys]").forEach((item) => item.addEventListener("click", () => {
  if (!rfb) return;
  const keys = item.dataset.keys.split(" ").map(keysym);
  keys.forEach((key) => rfb.sendKey(key, null, true));
  keys.slice().reverse().forEach((key) => rfb.sendKey(key, null, false));
  rfb.focus();
}));
document.getElementById("btn-paste").addEventListener("click", () => {
  if (!rfb) return;
  typeText(rfb, document.getElementById("paste-text").value);
  rfb.focus();
});
connect();
