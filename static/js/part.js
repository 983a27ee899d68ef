// A part of a page loaded from its own URL after the page (e.g. the VM page's backups):
// <div data-part-url="…"> is filled on load, and while what it shows carries data-part-poll
// (a backup running), fetched again every few seconds. No inline script (the CSP allows none).
(() => {
  const POLL_MS = 3000;

  async function load(part) {
    const response = await fetch(part.dataset.partUrl, { credentials: "same-origin" });
    if (!response.ok) return;
    part.innerHTML = await response.text();
    if (part.querySelector("[data-part-poll]")) setTimeout(() => load(part), POLL_MS);
  }

  document.querySelectorAll("[data-part-url]").forEach((part) => load(part));
})();
