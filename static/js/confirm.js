// Forms that ask first: <form data-confirm="Question?" data-confirm-button="Do it"> shows the page's
// confirmation dialog (#confirm-modal in base.html) and is sent only when its button is pressed.
// Listens on the document, so forms swapped in by live refreshes ask too.
(() => {
  const dialog = document.getElementById("confirm-modal");
  if (!dialog) return;
  let pending = null;

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.matches("form[data-confirm]") || form.dataset.confirmed) return;
    event.preventDefault();
    pending = form;
    dialog.querySelector("[data-confirm-text]").textContent = form.dataset.confirm;
    dialog.querySelector("[data-confirm-ok]").textContent = form.dataset.confirmButton || "OK";
    bootstrap.Modal.getOrCreateInstance(dialog).show();
  });

  dialog.querySelector("[data-confirm-ok]").addEventListener("click", () => {
    const form = pending;
    pending = null;
    bootstrap.Modal.getOrCreateInstance(dialog).hide();
    if (form && form.isConnected) {
      form.dataset.confirmed = "1";
      form.requestSubmit();
    }
  });
  dialog.addEventListener("hidden.bs.modal", () => { pending = null; });
})();
