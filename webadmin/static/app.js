// "Copy link": the direct link and its title to the clipboard (HTML link and plain text).
document.addEventListener("click", async (event) => {
  const button = event.target.closest("#copy-link");
  if (!button) return;
  const url = button.dataset.url, title = button.dataset.title;
  const plain = `${title}\n${url}`;
  const html = `<a href="${url.replace(/"/g, "&quot;")}">${title.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</a>`;
  try {
    if (window.ClipboardItem && navigator.clipboard && navigator.clipboard.write) {
      await navigator.clipboard.write([new ClipboardItem({
        "text/plain": new Blob([plain], {type: "text/plain"}),
        "text/html": new Blob([html], {type: "text/html"})})]);
    } else {
      throw new Error("no async clipboard (plain http)");
    }
  } catch (e) {
    const area = document.createElement("textarea");
    area.value = plain;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = button.dataset.done || "✓";
});
