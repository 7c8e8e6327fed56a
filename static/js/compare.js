// The Compare page: the same message in 2–4 columns, each its own provider, model and
// parameters, or Column 1's setup N times ("Run × N"); a word diff of two answers.
// Every column runs in a conversation of its own and watches it on its own websocket.
// Model output is untrusted: markdown goes through marked, then DOMPurify; the diff is text.
import { MarkdownView, api, assembleToolCalls, scheduleRender } from "./common.js";
import { ACTIVE, ConversationSocket, RunLedger } from "./lib/conversation-socket.js";
import { readParams, showFieldErrors } from "./lib/params.js";
import { url } from "./lib/urls.js";
import { diffWords } from "./vendor/diff-9.0.0.esm.js";

const config = JSON.parse(document.getElementById("compare-config").textContent);
const $ = (id) => document.getElementById(id);
const els = {
  form: $("compare-form"), system: $("system"), message: $("message"), messageError: $("message-error"),
  columns: $("columns"), sync: $("sync"), repeat: $("repeat"), repeatError: $("repeat-error"),
  run: $("run"), stop: $("stop"), error: $("form-error"), grid: $("columns-grid"),
  diffA: $("diff-a"), diffB: $("diff-b"), diffStats: $("diff-stats"), diffOutput: $("diff-output"),
  summary: $("repeat-summary"),
};
const SYNC_WAIT_MS = 5000; // how long a column waits for its websocket before submitting anyway

// ------------------------------------------------------------------ formatting

function formatMs(ms) {
  if (ms == null) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function usageText(usage) {
  if (!usage || usage.total_tokens == null) return "—";
  const text = `${usage.prompt_tokens ?? "?"} prompt + ${usage.completion_tokens ?? "?"} completion = ${usage.total_tokens} tokens`;
  return usage.estimated ? `${text} (estimated)` : text;
}

// A field as this page names it in messages.
const label = (name) => (name === "extra_body" ? "extra body" : name);

// ------------------------------------------------------------------ a column

class Column {
  constructor(el) {
    this.el = el;
    this.number = Number(el.dataset.column);
    const q = (selector) => el.querySelector(selector);
    this.setupEl = q('[data-role="setup"]');
    this.provider = q('[data-field="provider"]');
    this.model = q('[data-field="model"]');
    this.modelOptions = q("datalist");
    this.modelsNote = $(`c${this.number}-models-note`);
    this.paramInputs = [...el.querySelectorAll("[data-param]")];
    this.noteEl = q('[data-role="note"]');
    this.errorEl = q('[data-role="error"]');
    this.reasoningEl = q('[data-role="reasoning"]');
    this.thoughtEl = q('[data-role="thought"]');
    this.answerEl = q('[data-role="answer"]');
    this.toolsEl = q('[data-role="tools"]');
    this.stopButton = q('[data-role="stop"]');
    this.metric = Object.fromEntries([...el.querySelectorAll("[data-metric]")].map((dd) => [dd.dataset.metric, dd]));
    this.answer = new MarkdownView(this.answerEl);
    this.generation = 0;
    this.clear();
    for (const p of config.providers) {
      const option = document.createElement("option");
      option.value = p.id;
      option.textContent = p.key_hint && !p.is_demo ? `${p.name} (${p.key_hint})` : p.name;
      this.provider.append(option);
    }
    this.provider.addEventListener("change", () => { this.model.value = ""; this.loadModels().then(() => this.loaded()); });
    this.stopButton.addEventListener("click", () => this.stop());
  }

  // Column 1 leads: once its model list is in, the followers mirror its model.
  loaded() { if (this.number === 1) mirror(); }

  get visible() { return !this.el.hidden; }
  get active() { return this.pending || (this.run != null && ACTIVE.has(this.run.status)); }
  get finished() { return this.run != null && !ACTIVE.has(this.run.status); }
  get text() { return this.answer.text; }

  async loadModels() {
    const provider = config.providers.find((p) => String(p.id) === this.provider.value);
    this.modelOptions.replaceChildren();
    this.modelsNote.textContent = "";
    if (!provider) return;
    const wanted = this.provider.value;
    let models = provider.models;
    try {
      const data = await api("GET", url("api-models", provider.id));
      models = data.models.length ? data.models : models;
      if (data.error) this.modelsNote.textContent = `Model list unavailable: ${data.error} Type a model name.`;
    } catch (error) {
      this.modelsNote.textContent = `Model list unavailable: ${error.message} Type a model name.`;
    }
    if (this.provider.value !== wanted) return; // changed again meanwhile
    this.modelOptions.replaceChildren(...models.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      return option;
    }));
    if (!this.model.value && models.length) this.model.value = models[0];
  }

  // This column's own provider, model and parameters, with every field's problem.
  readSetup() {
    const errors = {};
    if (!this.provider.value) errors.provider = "choose a provider";
    const model = this.model.value.trim();
    if (!model) errors.model = "choose or type a model";
    const { params, extra, errors: paramErrors } = readParams(this.paramInputs, config.parameters);
    return { provider: Number(this.provider.value), model, params, extra, errors: { ...errors, ...paramErrors } };
  }

  showFieldErrors(errors) { showFieldErrors(this.fields(), errors, label); }

  fields() {
    return [["provider", this.provider], ["model", this.model], ...this.paramInputs.map((i) => [i.dataset.param, i])];
  }

  hasField(name) { return this.fields().some(([field]) => field === name); }

  // Mirror another column's setup: its parameters, and with `whole` its provider and model too.
  copyFrom(other, whole) {
    if (whole) {
      if (this.provider.value !== other.provider.value) {
        this.provider.value = other.provider.value;
        this.loadModels();
      }
      this.model.value = other.model.value;
    }
    other.paramInputs.forEach((input, i) => { this.paramInputs[i].value = input.value; });
  }

  setMode({ repeat, sync }) {
    // A follower keeps its own setup aside while it mirrors Column 1, and gets it back after.
    const mirrored = this.number > 1 && (repeat || sync);
    if (mirrored && !this.saved) {
      this.saved = { provider: this.provider.value, model: this.model.value, values: [...this.paramInputs].map((i) => i.value) };
    } else if (!mirrored && this.saved) {
      const { provider, model, values } = this.saved;
      this.saved = null;
      if (this.provider.value !== provider) { this.provider.value = provider; this.loadModels(); }
      this.model.value = model;
      [...this.paramInputs].forEach((input, i) => { input.value = values[i]; });
    }
    const follower = this.number > 1 && this.visible;
    this.setupEl.disabled = follower && repeat;
    for (const input of this.paramInputs) input.disabled = follower && sync && !repeat;
    this.noteEl.textContent = follower && repeat ? "repeats Column 1" : follower && sync ? "parameters of Column 1" : "";
  }

  // ---- a run

  clear() {
    this.generation += 1;
    this.closeSocket();
    this.conversation = null;
    this.run = null;
    this.runId = null;
    this.ledger = new RunLedger();
    this.pending = false;
    this.submittedAt = null;
    this.firstTokenAt = null;
    this.fragments = null;
    this.answer.reset("");
    this.answerEl.removeAttribute("aria-busy");
    this.thoughtEl.textContent = "";
    this.reasoningEl.hidden = true;
    this.toolsEl.hidden = true;
    this.toolsEl.textContent = "";
    this.showError("");
    this.el.dataset.status = "idle";
    this.setMetrics({ status: "idle" });
  }

  showError(text) {
    this.errorEl.textContent = text;
    this.errorEl.hidden = !text;
    this.errorEl.setAttribute("role", text ? "alert" : "none");
  }

  setMetrics({ status, ttft = "—", tps = "—", total = "—", usage = "—", cost = null }) {
    this.metric.status.textContent = status;
    this.metric.cost.textContent = cost ? `$${cost.usd.toFixed(4)}${cost.estimated ? " (estimated)" : ""}` : "—";
    this.metric.cost.title = cost ? "from the provider's prices" : "no price set for this provider and model";
    this.metric.ttft.textContent = ttft;
    this.metric.tps.textContent = tps;
    this.metric.total.textContent = total;
    this.metric.usage.textContent = usage;
  }

  // Create this column's conversation and open its websocket; resolves once the socket
  // has said which runs are active (so no event of the coming run is missed), or soon anyway.
  async prepare(title, comparison) {
    const generation = this.generation;
    this.pending = true;
    this.el.dataset.status = "starting";
    this.setMetrics({ status: "starting…" });
    const created = await api("POST", url("api-conversations"), { title, comparison });
    if (generation !== this.generation) return false;
    this.conversation = created.id;
    await new Promise((resolve) => {
      this.onSynced = resolve;
      setTimeout(resolve, SYNC_WAIT_MS);
      this.connect();
    });
    return generation === this.generation;
  }

  async submit(submission) {
    const generation = this.generation;
    this.submittedAt = performance.now();
    this.socket?.touch();
    try {
      const data = await api("POST", url("api-submit", this.conversation), submission);
      if (generation !== this.generation) return;
      this.pending = false;
      this.adopt(data.run.id);
      if (!this.run) this.load(data.run);
      else this.update();
    } catch (error) {
      if (generation !== this.generation) return;
      this.fail(error);
    }
  }

  // A refused submission (400 fields, 503 busy, …) in plain words; nothing was sent.
  fail(error) {
    this.pending = false;
    this.closeSocket();
    const fields = error.fields || {};
    const own = Object.fromEntries(Object.entries(fields).filter(([name]) => this.hasField(name)));
    if (Object.keys(own).length) this.showFieldErrors(own);
    const reasons = Object.entries(fields).map(([name, why]) => `${label(name)} ${why}`);
    const why = reasons.length ? reasons.join("; ") : error.message;
    this.showError(error.busy ? `Not sent: the relay is busy. ${error.message}` : `Not sent: ${why}`);
    this.el.dataset.status = "refused";
    this.setMetrics({ status: error.busy ? "busy, not sent" : "not sent" });
    onColumnChanged();
  }

  adopt(runId) {
    if (this.runId == null) this.runId = runId;
    return this.runId === runId;
  }

  // A run's full state (a snapshot, the submit answer, the final event, a stored read).
  load(run) {
    this.run = { ...this.run, ...run };
    this.ledger.loaded(run);
    const choice = (run.choices || []).find((c) => c.index === 0) || (run.choices || [])[0];
    this.answer.reset(choice?.content || "");
    this.thoughtEl.textContent = choice?.reasoning || "";
    this.reasoningEl.hidden = !choice?.reasoning;
    this.fragments = null;
    this.showTools(choice?.tool_calls || null);
    if (!this.firstTokenAt && this.answer.text) this.firstTokenAt = performance.now();
    if (ACTIVE.has(this.run.status)) scheduleRender(this.answer);
    else this.answer.render(true);
    this.update();
  }

  applyDelta(event) {
    for (const d of event.choices || []) {
      if (d.index !== 0) continue; // a column shows the first choice
      if (d.content) { this.answer.append(d.content); scheduleRender(this.answer); }
      if (d.reasoning) { this.reasoningEl.hidden = false; this.thoughtEl.append(d.reasoning); }
      if (d.tool_calls) { this.fragments = (this.fragments || []).concat(d.tool_calls); this.showTools(assembleToolCalls(this.fragments)); }
      if ((d.content || d.reasoning || d.tool_calls) && !this.firstTokenAt) this.firstTokenAt = performance.now();
    }
    if (this.run && this.run.status === "queued") this.run.status = "streaming";
    this.update();
  }

  showTools(calls) {
    this.toolsEl.hidden = !(calls && calls.length);
    this.toolsEl.textContent = calls && calls.length
      ? calls.map((c) => `${c.function?.name}(${c.function?.arguments})`).join("\n") : "";
  }

  update() {
    const run = this.run;
    if (!run) return;
    const active = ACTIVE.has(run.status);
    const timing = run.timing || {};
    this.el.dataset.status = run.status;
    if (active) this.answerEl.setAttribute("aria-busy", "true"); else this.answerEl.removeAttribute("aria-busy");
    // While streaming, the browser's own clock; the server's measurements once it ends.
    const clientTtft = this.firstTokenAt && this.submittedAt ? this.firstTokenAt - this.submittedAt : null;
    this.setMetrics({
      status: active ? `${run.status}…` : run.status,
      ttft: formatMs(active ? clientTtft : timing.ttft_ms ?? clientTtft),
      tps: timing.tokens_per_second != null ? String(timing.tokens_per_second) : "—",
      total: formatMs(timing.total_ms),
      usage: usageText(run.usage),
      cost: active ? null : run.cost,
    });
    const error = run.error ? run.error.message || run.error.kind : "";
    this.showError(error ? `The run ${run.status}: ${error}` : "");
    if (!active) this.closeSocket();
    onColumnChanged();
  }

  async stop() {
    if (!this.runId || !this.active) return;
    this.stopButton.disabled = true;
    try { await api("POST", url("api-stop", this.runId)); } catch (error) { this.showError(error.message); }
  }

  // ---- the websocket

  // The socket's rules (repeats, stale snapshots, reconnecting, close codes, a quiet run read
  // again) are lib/conversation-socket.js's; it reconnects while this column's run is active.
  connect() {
    this.closeSocket();
    this.socket = new ConversationSocket(this.conversation, {
      ledger: this.ledger,
      onEvent: (event) => this.handleEvent(event),
      onState: (status, socket) => this.socketState(status, socket),
      onQuiet: () => this.refresh(),
      shouldReconnect: () => this.active,
    });
  }

  socketState(status, socket) {
    if (status === "live" && socket.roleChanged) showError("Your role changed: reload the page to see what you may do now.");
    if (status === "connecting" || status === "live") return;
    this.synced(); // no sync is coming on this socket
    if (status === "logged-out") this.showError("Logged out: log in again to follow this column.");
    if (status === "forbidden") this.showError("No access to this column's conversation.");
  }

  closeSocket() {
    if (!this.socket) return;
    this.socket.close();
    this.socket = null;
  }

  synced() {
    const resolve = this.onSynced;
    this.onSynced = null;
    if (resolve) resolve();
  }

  // Returns false for an event it did not apply (one of another run than this column's).
  handleEvent(event) {
    switch (event.type) {
      case "sync": {
        this.synced();
        // Our run ended while the socket was away: read its final state.
        if (this.runId && event.stale.includes(this.runId)) this.refresh();
        break;
      }
      case "snapshot": {
        if (!this.adopt(event.run.id)) return false;
        this.load(event.run);
        break;
      }
      case "run.started": {
        if (!this.adopt(event.run.id)) return false;
        if (!this.run) this.load(event.run);
        break;
      }
      case "run.delta": {
        if (!this.adopt(event.run)) return false;
        if (!this.run) this.run = { id: event.run, status: "streaming" };
        this.applyDelta(event);
        break;
      }
      case "run.done": {
        if (!this.adopt(event.run.id)) return false;
        this.pending = false;
        this.load(event.run);
        break;
      }
      default:
    }
    return true;
  }

  async refresh() {
    if (!this.runId) return;
    const generation = this.generation;
    try {
      const run = await api("GET", url("api-run", this.runId));
      if (generation !== this.generation || this.ledger.outdated(run)) return;
      if (!ACTIVE.has(run.status) || run.seq > this.ledger.seq(run.id)) this.load(run);
    } catch { /* try again on the next quiet check */ }
  }
}

const columns = [...document.querySelectorAll(".column")].map((el) => new Column(el));
const state = { repeat: null }; // the last Run × N: how many, in which columns

// ------------------------------------------------------------------ page modes

function repeatCount() {
  const raw = els.repeat.value.trim();
  const n = Number(raw || "1");
  if (!Number.isInteger(n) || n < 1 || n > config.maxColumns) return null;
  return n;
}

function visibleCount() {
  const n = repeatCount();
  return n && n > 1 ? n : Number(els.columns.value);
}

function applyMode() {
  const n = repeatCount();
  const repeat = n != null && n > 1;
  const count = visibleCount();
  els.columns.disabled = repeat;
  columns.forEach((column, i) => {
    column.el.hidden = i >= count;
    column.setMode({ repeat, sync: els.sync.checked });
  });
  els.grid.dataset.count = String(count);
  mirror();
  fillDiffChoices();
  updateButtons();
}

// Followers show what they will send: Column 1's parameters (sync), or its whole setup (Run × N).
function mirror() {
  const n = repeatCount();
  const repeat = n != null && n > 1;
  if (!repeat && !els.sync.checked) return;
  for (const column of columns.slice(1)) column.copyFrom(columns[0], repeat);
}

// ------------------------------------------------------------------ compare

function showError(text) {
  els.error.textContent = text;
  els.error.hidden = !text;
}

function validate() {
  const errors = [];
  const n = repeatCount();
  els.repeatError.textContent = n == null ? `Run × N must be a whole number from 1 to ${config.maxColumns}` : "";
  els.repeat.setAttribute("aria-invalid", n == null ? "true" : "false");
  if (n == null) errors.push(`Run × N must be a whole number from 1 to ${config.maxColumns}.`);
  const noMessage = !els.message.value.trim();
  els.messageError.textContent = noMessage ? "Message: write a message" : "";
  els.message.setAttribute("aria-invalid", noMessage ? "true" : "false");
  if (noMessage) errors.push("Write a message.");
  if (n == null) return { errors };

  const repeat = n > 1;
  const count = visibleCount();
  const first = columns[0].readSetup();
  const plans = [];
  for (const column of columns.slice(0, count)) {
    // A follower's mirrored fields are Column 1's: their problems show in Column 1 only.
    let setup = first;
    let own = first.errors;
    if (column !== columns[0] && repeat) own = {};
    else if (column !== columns[0]) {
      setup = column.readSetup();
      own = setup.errors;
      if (els.sync.checked) {
        own = Object.fromEntries(Object.entries(own).filter(([name]) => name === "provider" || name === "model"));
        setup = { ...setup, params: first.params, extra: first.extra };
      }
    }
    column.showFieldErrors(own);
    const names = Object.keys(own);
    if (names.length) {
      const fields = names.map((name) => `${label(name)} ${own[name]}`);
      errors.push(`Column ${column.number}: ${fields.join("; ")}.`);
    }
    plans.push({ column, setup });
  }
  return { errors, plans, repeat: repeat ? n : null };
}

async function compare() {
  showError("");
  if (!config.canRun) return;
  if (columns.some((c) => c.active)) { showError("Stop the running columns first."); return; }
  const { errors, plans, repeat } = validate();
  if (errors.length) { showError(`Not sent. ${errors.join(" ")}`); return; }

  els.run.disabled = true;
  const system = els.system.value;
  const message = els.message.value;
  state.repeat = repeat ? { n: repeat, columns: plans.map((p) => p.column) } : null;
  for (const { column } of plans) column.clear();
  for (const column of columns.slice(plans.length)) column.clear();
  els.summary.hidden = true;
  fillDiffChoices();
  renderDiff();

  // First every column's conversation and websocket, then all submissions at once. The
  // columns share one comparison key: the conversation list shows them as one entry.
  const comparison = comparisonKey();
  const ready = await Promise.all(plans.map(async ({ column, setup }) => {
    try {
      return await column.prepare(`Compare: ${setup.model} #${column.number}`, comparison);
    } catch (error) {
      column.fail(error);
      return false;
    }
  }));
  await Promise.all(plans.map(({ column, setup }, i) => {
    if (!ready[i]) return null;
    return column.submit({
      provider: setup.provider,
      model: setup.model,
      system,
      message,
      params: { ...setup.params, stream: true },
      extra_body: setup.extra,
    });
  }));
  updateButtons();
}

/** A random key (36 characters at most, letters, digits and dashes) naming one comparison. */
function comparisonKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function stopAll() {
  els.stop.disabled = true;
  await Promise.all(columns.filter((c) => c.active).map((c) => c.stop()));
}

function updateButtons() {
  const busy = columns.some((c) => c.active);
  els.run.disabled = !config.canRun || busy;
  els.stop.disabled = !config.canRun || !busy;
  for (const c of columns) c.stopButton.disabled = !config.canRun || !c.runId || !c.active;
}

// ------------------------------------------------------------------ diff

function fillDiffChoices() {
  const count = visibleCount();
  for (const [select, fallback] of [[els.diffA, 1], [els.diffB, 2]]) {
    const current = Number(select.value) || fallback;
    select.replaceChildren(...columns.slice(0, count).map((c) => {
      const option = document.createElement("option");
      option.value = c.number;
      option.textContent = `Column ${c.number}`;
      return option;
    }));
    select.value = String(current <= count ? current : fallback);
  }
}

let diffShown = null; // what the diff shows now, so a streaming third column does not redo it
function renderDiff() {
  const a = columns[Number(els.diffA.value) - 1];
  const b = columns[Number(els.diffB.value) - 1];
  const key = [a, b].map((c) => (c && c.finished ? `${c.number}:${c.runId}:${c.run.status}` : c && c.active ? "active" : "-")).join("|");
  if (key === diffShown) return;
  diffShown = key;
  els.diffOutput.replaceChildren();
  if (!a || !b || !a.finished || !b.finished) {
    const missing = [a, b].find((c) => c && !c.active && !c.run);
    if (![a, b].some((c) => c && (c.active || c.run))) els.diffStats.textContent = "Run a comparison to see how two answers differ.";
    else if ([a, b].some((c) => c && c.active)) els.diffStats.textContent = "The diff shows once both answers have finished.";
    else els.diffStats.textContent = `Column ${missing.number} has no answer to compare.`;
    return;
  }
  if (a === b) {
    els.diffStats.textContent = "Choose two different columns.";
    return;
  }
  const parts = diffWords(a.text, b.text);
  let added = 0;
  let removed = 0;
  const nodes = parts.map((part) => {
    if (!part.added && !part.removed) return document.createTextNode(part.value);
    const el = document.createElement(part.added ? "ins" : "del");
    const marker = document.createElement("span");
    marker.className = "visually-hidden";
    marker.textContent = part.added ? `[only in Column ${b.number}: ` : `[only in Column ${a.number}: `;
    const end = document.createElement("span");
    end.className = "visually-hidden";
    end.textContent = "]";
    el.append(marker, part.value, end);
    if (part.added) added += part.count; else removed += part.count;
    return el;
  });
  els.diffOutput.append(...nodes);
  els.diffStats.textContent = added || removed
    ? `Column ${a.number} → Column ${b.number}: ${added} words inserted, ${removed} deleted.`
    : `Column ${a.number} and Column ${b.number} answered identically.`;
}

// For Run × N: how many of the N answers are the same, once all have finished.
function renderSummary() {
  const repeat = state.repeat;
  if (!repeat || !repeat.columns.every((c) => c.finished || (!c.active && !c.run))) {
    els.summary.hidden = true;
    return;
  }
  const answered = repeat.columns.filter((c) => c.finished);
  const groups = new Map();
  for (const c of answered) groups.set(c.text, [...(groups.get(c.text) || []), c.number]);
  const largest = Math.max(0, ...[...groups.values()].map((g) => g.length));
  const k = largest > 1 ? largest : 0;
  let text = `${k} of ${repeat.n} answers identical`;
  if (groups.size > 1) text += ` (${groups.size} different answers)`;
  if (answered.length < repeat.n) text += `; ${repeat.n - answered.length} not answered`;
  els.summary.textContent = `${text}.`;
  els.summary.hidden = false;
  for (const c of repeat.columns) {
    if (!c.finished || c.number === 1) continue;
    c.noteEl.textContent = c.text === repeat.columns[0].text ? "repeats Column 1 · identical" : "repeats Column 1 · differs";
  }
}

let changeQueued = false;
function onColumnChanged() {
  updateButtons();
  if (changeQueued) return;
  changeQueued = true;
  queueMicrotask(() => {
    changeQueued = false;
    renderDiff();
    renderSummary();
  });
}

// ------------------------------------------------------------------ start

function init() {
  els.form.addEventListener("submit", (e) => { e.preventDefault(); compare(); });
  els.message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); compare(); }
  });
  els.stop.addEventListener("click", stopAll);
  els.columns.addEventListener("change", applyMode);
  els.sync.addEventListener("change", applyMode);
  els.repeat.addEventListener("input", applyMode);
  els.diffA.addEventListener("change", renderDiff);
  els.diffB.addEventListener("change", renderDiff);
  // Column 1 leads: followers mirror its setup as it changes.
  columns[0].el.addEventListener("input", mirror);
  columns[0].el.addEventListener("change", mirror);
  if (!config.providers.length) showError("No provider is enabled in this workspace; ask an admin to add one.");
  for (const column of columns) column.loadModels().then(() => column.loaded());
  applyMode();
}

init();
