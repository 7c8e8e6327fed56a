// The providers page: every member sees the workspace's providers (never a key, only its
// mask); owners and admins add, edit (the key write-only: empty keeps it), test the
// connection, probe, enable, disable and delete them, and set prices per model.
import { api } from "./common.js";
import { url } from "./lib/urls.js";

const config = JSON.parse(document.getElementById("providers-config").textContent);
const $ = (id) => document.getElementById(id);
let providers = config.providers;
let editing = null; // the provider the dialog edits; null: a new one
let probing = null;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function button(name, onClick, props = {}) {
  return el("button", { type: "button", textContent: name, onclick: onClick, ...props });
}

// ------------------------------------------------------------------ the list

function render() {
  $("provider-rows").replaceChildren(...providers.map(row));
  for (const provider of providers) loadModels(provider);
}

function row(provider) {
  const cells = [
    el("th", { scope: "row", textContent: provider.name }),
    el("td", { textContent: provider.is_demo ? "(built-in)" : provider.base_url }),
    el("td", { textContent: provider.key_hint || "(none)" }),
    el("td", { className: "models", id: `models-${provider.id}`, textContent: "…" }),
    el("td", { textContent: provider.enabled ? "Yes" : "No" }),
  ];
  if (config.manage) {
    const result = el("span", { className: "result note", role: "status", id: `result-${provider.id}` });
    cells.push(el("td", { className: "actions" },
      button("Edit", () => openEditor(provider)),
      button("Test connection", () => testConnection(provider, result)),
      button("Probe", () => openProbe(provider), { disabled: !provider.enabled }),
      button(provider.enabled ? "Disable" : "Enable", () => setEnabled(provider, !provider.enabled, result)),
      button("Delete", () => remove(provider, result)),
      result,
    ));
  }
  return el("tr", { "aria-label": provider.name }, ...cells);
}

async function loadModels(provider) {
  const cell = $(`models-${provider.id}`);
  try {
    const data = await api("GET", url("api-models", provider.id));
    if (data.error) cell.textContent = `Not listed: ${data.error}`;
    else cell.textContent = data.models.length ? data.models.join(", ") : "(none listed)";
  } catch (error) {
    cell.textContent = error.message;
  }
}

async function reload(message = "") {
  const data = await api("GET", url("api-providers", null, { workspace: config.workspace }));
  providers = data.providers;
  render();
  if (message) $("page-status").textContent = message;
}

async function testConnection(provider, result) {
  result.textContent = "Testing…";
  try {
    const data = await api("POST", url("api-provider-test", provider.id));
    result.textContent = data.message;
  } catch (error) {
    result.textContent = error.message;
  }
}

async function setEnabled(provider, enabled, result) {
  try {
    await api("PATCH", url("api-provider", provider.id), { enabled });
    await reload(`${provider.name} ${enabled ? "enabled" : "disabled"}.`);
  } catch (error) {
    result.textContent = error.message;
  }
}

async function remove(provider, result) {
  const question = `Delete the provider ${provider.name}? Its runs stay in the usage ledger under its name.`;
  if (!window.confirm(question)) return;
  try {
    const data = await api("DELETE", url("api-provider", provider.id));
    await reload(`${provider.name} deleted; ${data.runs_kept} runs kept in the ledger.`);
  } catch (error) {
    result.textContent = error.message;
  }
}

// ------------------------------------------------------------------ the add / edit dialog

function headerRow(name = "", value = "") {
  const n = $("header-rows").children.length + 1;
  const tr = el("tr", {},
    el("td", {}, el("input", { type: "text", value: name, className: "header-name", "aria-label": `Header name ${n}` })),
    el("td", {}, el("input", { type: "text", value, className: "header-value", "aria-label": `Header value ${n}` })),
  );
  tr.append(el("td", {}, button(`Remove header ${n}`, () => tr.remove())));
  $("header-rows").append(tr);
}

function priceRow(model = "", price = {}) {
  const n = $("price-rows").children.length + 1;
  const number = (key, label, value) => el("input", {
    type: "number", min: "0", step: "any", className: `price-${key}`, "aria-label": `${label} ${n}`,
    value: value ?? "",
  });
  const tr = el("tr", {},
    el("td", {}, el("input", { type: "text", value: model, className: "price-model", "aria-label": `Model ${n}` })),
    el("td", {}, number("input", "Input $/1M", price.input)),
    el("td", {}, number("output", "Output $/1M", price.output)),
    el("td", {}, number("cached_input", "Cached input $/1M", price.cached_input)),
  );
  tr.append(el("td", {}, button(`Remove price ${n}`, () => tr.remove())));
  $("price-rows").append(tr);
}

function clearErrors() {
  for (const node of document.querySelectorAll("#provider-form .field-error")) node.textContent = "";
  for (const node of document.querySelectorAll("#provider-form [aria-invalid]")) node.removeAttribute("aria-invalid");
  $("provider-form-error").hidden = true;
}

function openEditor(provider) {
  editing = provider;
  clearErrors();
  $("provider-form").reset();
  $("provider-dialog-title").textContent = provider ? `Edit ${provider.name}` : "Add provider";
  $("provider-name").value = provider?.name ?? "";
  $("provider-base-url").value = provider?.base_url ?? "";
  $("provider-base-url").disabled = Boolean(provider?.is_demo);
  $("provider-api-key").value = ""; // write-only: never filled in
  $("provider-api-key").disabled = Boolean(provider?.is_demo);
  $("provider-key-help").textContent = provider?.key_hint
    ? `Stored key: ${provider.key_hint}. Leave empty to keep it; enter a new key to replace it.`
    : "The key is stored encrypted and never shown again.";
  $("provider-enabled").checked = provider ? provider.enabled : true;
  $("header-rows").replaceChildren();
  for (const [name, value] of Object.entries(provider?.extra_headers ?? {})) headerRow(name, value);
  $("price-rows").replaceChildren();
  for (const [model, price] of Object.entries(provider?.prices ?? {})) priceRow(model, price);
  $("provider-dialog").showModal();
  $("provider-name").focus();
}

// The form's fields as the API takes them; a problem found here is shown as the server's would be.
function collect() {
  const problems = {};
  const headers = {};
  for (const tr of $("header-rows").children) {
    const name = tr.querySelector(".header-name").value.trim();
    const value = tr.querySelector(".header-value").value;
    if (!name && !value) continue;
    if (!name) problems.extra_headers = "A header value needs a header name.";
    else if (Object.keys(headers).some((k) => k.toLowerCase() === name.toLowerCase())) problems.extra_headers = `${name} is given twice.`;
    headers[name] = value;
  }
  const prices = {};
  for (const tr of $("price-rows").children) {
    const model = tr.querySelector(".price-model").value.trim();
    const cells = ["input", "output", "cached_input"].map((k) => [k, tr.querySelector(`.price-${k}`).value.trim()]);
    if (!model && cells.every(([, v]) => v === "")) continue;
    if (!model) { problems.prices = 'Each price row needs a model, or "*" for every model.'; continue; }
    if (model in prices) problems.prices = `${model} has two rows.`;
    const price = {};
    for (const [key, text] of cells) {
      if (text === "") continue;
      const value = Number(text);
      if (!Number.isFinite(value) || value < 0) problems.prices = `${model}: prices must be numbers of dollars, 0 or more.`;
      price[key] = value;
    }
    if (!("input" in price) || !("output" in price)) problems.prices = `${model}: input and output prices are both needed.`;
    prices[model] = price;
  }
  const body = {
    name: $("provider-name").value.trim(),
    extra_headers: headers,
    prices,
    enabled: $("provider-enabled").checked,
  };
  if (!editing?.is_demo) body.base_url = $("provider-base-url").value.trim();
  const key = $("provider-api-key").value;
  if (key) body.api_key = key;
  return { body, problems };
}

function showErrors(fields, message) {
  for (const [field, why] of Object.entries(fields)) {
    const target = $(`provider-${field}-error`);
    if (target) target.textContent = why;
    const input = { name: "provider-name", base_url: "provider-base-url", api_key: "provider-api-key" }[field];
    if (input) $(input).setAttribute("aria-invalid", "true");
  }
  $("provider-form-error").textContent = message;
  $("provider-form-error").hidden = false;
}

async function save(event) {
  event.preventDefault();
  clearErrors();
  const { body, problems } = collect();
  if (Object.keys(problems).length) {
    showErrors(problems, `Not saved. Fix: ${Object.keys(problems).join(", ")}.`);
    return;
  }
  $("provider-save").disabled = true;
  try {
    const data = editing
      ? await api("PATCH", url("api-provider", editing.id), body)
      : await api("POST", url("api-providers", null, { workspace: config.workspace }), body);
    $("provider-api-key").value = "";
    $("provider-dialog").close();
    await reload(`${data.provider.name} saved.`);
  } catch (error) {
    showErrors(error.fields || {}, `Not saved. ${error.message}`);
  } finally {
    $("provider-save").disabled = false;
  }
}

// ------------------------------------------------------------------ probe (the existing endpoint)

function openProbe(provider) {
  probing = provider;
  $("probe-dialog-title").textContent = `Probe ${provider.name}`;
  $("probe-model").value = provider.capabilities?.model || "";
  $("probe-status").textContent = provider.capabilities?.probed_at
    ? `Last probed ${provider.capabilities.probed_at.slice(0, 16).replace("T", " ")} with ${provider.capabilities.model}.`
    : "Not probed yet.";
  $("probe-dialog").showModal();
}

async function runProbe(event) {
  event.preventDefault();
  $("probe-run").disabled = true;
  $("probe-status").textContent = "Probing… one small request per feature; this can take a minute.";
  try {
    const data = await api("POST", url("api-probe", probing.id), { model: $("probe-model").value.trim() });
    const counts = {};
    for (const verdict of Object.values(data.capabilities.parameters || {})) counts[verdict.status] = (counts[verdict.status] || 0) + 1;
    $("probe-status").textContent = `Done: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || "nothing to report"}.`;
    await reload();
  } catch (error) {
    $("probe-status").textContent = error.message;
  } finally {
    $("probe-run").disabled = false;
  }
}

if (config.manage) {
  $("add-provider").addEventListener("click", () => openEditor(null));
  $("add-header").addEventListener("click", () => headerRow());
  $("add-price").addEventListener("click", () => priceRow());
  $("provider-form").addEventListener("submit", save);
  $("provider-cancel").addEventListener("click", () => { $("provider-api-key").value = ""; $("provider-dialog").close(); });
  $("probe-form").addEventListener("submit", runProbe);
  $("probe-close").addEventListener("click", () => $("probe-dialog").close());
}
render();
