// The members page: "Copy" beside the new invite link (the page works without it).
const link = document.getElementById("invite-link");
const copy = document.getElementById("copy-invite-link");
if (link && copy) {
  copy.hidden = false;
  copy.addEventListener("click", async () => {
    link.select();
    try {
      await navigator.clipboard.writeText(link.value);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Press Ctrl+C to copy";
    }
  });
}
