// Copy and download buttons, without inline script (the panel's Content-Security-Policy allows none):
// <button data-copy="#element"> copies the element's value (or text);
// <button data-download="#element" data-filename="name.txt"> saves it as a text file.
(() => {
  const textOf = (selector) => {
    const element = document.querySelector(selector);
    return element ? (element.value !== undefined ? element.value : element.innerText).trim() : "";
  };

  document.addEventListener("click", async (event) => {
    const copy = event.target.closest("[data-copy]");
    if (copy) {
      const label = copy.innerHTML;
      try {
        await navigator.clipboard.writeText(textOf(copy.dataset.copy));
        copy.textContent = "Copied";
      } catch (error) {
        copy.textContent = "Select and copy it by hand";
      }
      setTimeout(() => { copy.innerHTML = label; }, 2000);
    }
    const download = event.target.closest("[data-download]");
    if (download) {
      const blob = new Blob([`${textOf(download.dataset.download)}\n`], { type: "text/plain" });
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = download.dataset.filename || "download.txt";
      link.click();
      URL.revokeObjectURL(link.href);
    }
  });
})();
