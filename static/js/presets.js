// Presets: save the panel (provider, model, system prompt, parameters) under a name,
// personal or shared with the workspace; choosing one applies it at once.
import { api } from "./common.js";
import { url } from "./lib/urls.js";
import { applyPanel, readPanel } from "./playground.js";

const config = JSON.parse(document.getElementById("playground-config").textContent);
const $ = (id) => document.getElementById(id);
const els = {
  select: $("preset"), mine: $("preset-mine"), shared: $("preset-shared"), status: $("preset-status"),
  remove: $("preset-delete"), open: $("preset-save-open"), dialog: $("preset-dialog"), form: $("preset-form"),
  name: $("preset-name"), share: $("preset-shared-box"), error: $("preset-error"), cancel: $("preset-cancel"),
};
let presets = new Map();

function say(text) { els.status.textContent = text; }

async function load(selected = "") {
  const data = await api("GET", url("api-presets", null, { workspace: config.workspace }));
  presets = new Map(data.presets.map((p) => [String(p.id), p]));
  const option = (p) => {
    const o = document.createElement("option");
    o.value = p.id;
    o.textContent = p.mine ? p.name : `${p.name} (${p.owner})`;
    return o;
  };
  els.mine.replaceChildren(...data.presets.filter((p) => p.mine).map(option));
  els.shared.replaceChildren(...data.presets.filter((p) => p.shared).map(option));
  els.mine.hidden = !els.mine.children.length;
  els.shared.hidden = !els.shared.children.length;
  els.select.value = presets.has(String(selected)) ? String(selected) : "";
  updateDelete();
}

function updateDelete() {
  const preset = presets.get(els.select.value);
  els.remove.disabled = !preset || !(preset.mine || config.canAdmin);
}

function apply() {
  const preset = presets.get(els.select.value);
  updateDelete();
  if (!preset) return;
  const known = config.providers.some((p) => p.id === preset.provider);
  applyPanel({ ...preset, provider: known ? preset.provider : null });
  say(`Applied preset “${preset.name}”${preset.provider && !known ? " (its provider is gone: kept the current one)" : ""}.`);
}

function openDialog() {
  const { errors } = readPanel();
  const bad = Object.keys(errors);
  if (bad.length) { say(`Fix ${bad.join(", ")} before saving a preset.`); return; }
  const current = presets.get(els.select.value);
  els.name.value = current?.mine ? current.name : "";
  els.share.checked = Boolean(current?.mine && current.shared);
  els.share.disabled = !config.canRun;
  els.error.hidden = true;
  els.dialog.showModal();
}

async function save(event) {
  event.preventDefault();
  const panel = readPanel();
  const body = {
    name: els.name.value.trim(), shared: els.share.checked, provider: panel.provider,
    model: panel.model, system: panel.system, params: panel.params, extra_body: panel.extra_body,
  };
  try {
    let saved;
    try {
      saved = await api("POST", url("api-presets", null, { workspace: config.workspace }), body);
    } catch (error) {
      if (error.status !== 409 || !confirm(error.message)) throw error;
      saved = await api("POST", url("api-presets", null, { workspace: config.workspace }), { ...body, overwrite: true });
    }
    els.dialog.close();
    await load(saved.id);
    say(`Saved preset “${saved.name}”${saved.shared ? ", shared with the workspace" : ""}.`);
  } catch (error) {
    els.error.textContent = error.message;
    els.error.hidden = false;
  }
}

async function remove() {
  const preset = presets.get(els.select.value);
  if (!preset || !confirm(`Delete preset “${preset.name}”?`)) return;
  try {
    await api("DELETE", url("api-preset", preset.id));
    await load();
    say(`Deleted preset “${preset.name}”.`);
  } catch (error) { say(error.message); }
}

els.select.addEventListener("change", apply);
els.open.addEventListener("click", openDialog);
els.cancel.addEventListener("click", () => els.dialog.close());
els.form.addEventListener("submit", save);
els.remove.addEventListener("click", remove);
load().catch((error) => say(`Presets unavailable: ${error.message}`));
