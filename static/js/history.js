// Export the shown conversation (JSON: the exact wire message list; Markdown: a readable
// transcript) and import an exported file as a new conversation.
import { api } from "./common.js";
import { url } from "./lib/urls.js";
import { applyPanel, currentConversation, openConversation, readPanel, showError } from "./playground.js";

const config = JSON.parse(document.getElementById("playground-config").textContent);
const $ = (id) => document.getElementById(id);
const toggle = $("export-toggle");
const menu = $("export-menu");
const links = { json: $("export-json"), md: $("export-md") };
const fileInput = $("import-conversation");
const importLabel = document.querySelector('label[for="import-conversation"]');

function setMenu(open) {
  menu.hidden = !open;
  toggle.setAttribute("aria-expanded", String(open));
}

/** Export works on the conversation being shown; with none, the links go nowhere. */
function showConversation(id) {
  toggle.disabled = !id;
  if (!id) setMenu(false);
  for (const [format, link] of Object.entries(links)) {
    if (id) {
      link.href = url(`api-export-${format}`, id);
      link.removeAttribute("aria-disabled");
    } else {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
    }
  }
}

async function importFile() {
  const file = fileInput.files[0];
  fileInput.value = ""; // choosing the same file again imports it again
  if (!file) return;
  importLabel.classList.add("busy");
  fileInput.disabled = true;
  try {
    const text = await file.text();
    const data = await api("POST", url("api-import-conversation", null, { workspace: config.workspace }), { text });
    await openConversation(data.conversation.id);
    // The export carries the model and parameters of its last run: load them, like Import request.
    if (data.model || Object.keys(data.params).length || Object.keys(data.extra_body).length) {
      const panel = readPanel();
      applyPanel({
        provider: panel.provider,
        model: data.model || panel.model,
        system: data.system,
        params: data.params,
        extra_body: data.extra_body,
      });
    }
    const skipped = Object.entries(data.skipped || {}).map(([name, why]) => `${name} ${why}`);
    showError(skipped.length ? `Imported. Not loaded: ${skipped.join("; ")}.` : "");
  } catch (error) {
    const why = error instanceof TypeError ? "the server could not be reached" : error.message;
    showError(`Could not import ${file.name}: ${why}`);
  } finally {
    importLabel.classList.remove("busy");
    fileInput.disabled = !config.canRun;
  }
}

toggle.addEventListener("click", () => setMenu(menu.hidden));
for (const link of Object.values(links)) {
  link.addEventListener("click", (event) => {
    if (!link.hasAttribute("href")) event.preventDefault();
    setMenu(false);
  });
}
document.addEventListener("click", (event) => {
  if (!menu.hidden && !event.target.closest(".history-export")) setMenu(false);
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !menu.hidden) {
    setMenu(false);
    toggle.focus();
  }
});
document.addEventListener("playground:conversation", (event) => showConversation(event.detail.id));

fileInput.disabled = !config.canRun;
if (!config.canRun) importLabel.title = "Viewers cannot import conversations.";
fileInput.addEventListener("change", importFile);
showConversation(currentConversation());
