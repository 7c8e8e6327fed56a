// The playground page: conversations, transcript, composer, parameters, live runs.
// Model output is untrusted: it is rendered only through common.js's renderMarkdown.
import { MarkdownView, api, assembleToolCalls, messageView, scheduleRender } from "./common.js";
import { ACTIVE, ConversationSocket, RunLedger } from "./lib/conversation-socket.js";
import { WorkspaceSocket } from "./lib/live-socket.js";
import { fillParams, readParams as readParamFields, showFieldErrors as showParamErrors } from "./lib/params.js";
import { idIn, url } from "./lib/urls.js";

const config = JSON.parse(document.getElementById("playground-config").textContent);
const $ = (id) => document.getElementById(id);
const els = {
  list: $("conversation-list"), filter: $("conversation-filter"), title: $("conversation-title"),
  transcript: $("transcript"), composer: $("composer"), message: $("message"), send: $("send"),
  stop: $("stop"), error: $("composer-error"), provider: $("provider"), model: $("model"),
  modelOptions: $("model-options"), modelsNote: $("models-note"), system: $("system"),
  connection: $("connection"), newConversation: $("new-conversation"), deleteConversation: $("delete-conversation"),
};
const state = {
  conversation: config.conversation, messages: new Map(), runs: new Map(), socket: null, ledger: new RunLedger(),
  creator: null, // the open conversation's creator (username): who may change it
};

// ------------------------------------------------------------------ what the role may do

// The policy's reason for each action this role may not take (access.POLICY, from the
// page's config); the controls it refuses are disabled with that reason beside them.
const refusals = config.refusals || {};

/** Why this user may not send in, or change, the open conversation ("" when they may):
 * a new one needs conversation.create; someone else's needs conversation.write_any. */
function writeRefusal() {
  if (!state.conversation) return refusals["conversation.create"] || "";
  if (refusals["conversation.write"]) return refusals["conversation.write"];
  if (state.creator !== config.user) return refusals["conversation.write_any"] || "";
  return "";
}

const mayWrite = () => !writeRefusal();

/** Show `reason` in the note `noteId` (hidden when empty). */
function showReason(noteId, reason) {
  const note = $(noteId);
  note.textContent = reason;
  note.hidden = !reason;
}

/** Disable `control` for `reason` (its accessible description is the visible note `noteId`). */
function refuse(control, reason, noteId) {
  if (!control) return;
  const ids = new Set((control.getAttribute("aria-describedby") || "").split(" ").filter(Boolean));
  if (reason) {
    control.disabled = true;
    control.title = reason;
    ids.add(noteId);
    control.setAttribute("aria-describedby", [...ids].join(" "));
  } else if (control.title && Object.values(refusals).includes(control.title)) {
    control.removeAttribute("title");
  }
}

/** Disable what the role may not do, with the reason, and offer Fork when they may not write. */
function applyPermissions() {
  const createRefusal = refusals["conversation.create"] || "";
  showReason("create-reason", createRefusal);
  for (const control of [els.newConversation, $("import-open")]) {
    control.disabled = Boolean(createRefusal);
    refuse(control, createRefusal, "create-reason");
  }
  refuse($("import-conversation"), createRefusal, "create-reason"); // history.js enables it
  const writing = writeRefusal();
  showReason("write-reason", writing);
  $("add-turn-open").disabled = Boolean(writing);
  refuse($("add-turn-open"), writing, "write-reason");
  refuse(els.send, writing, "write-reason");
  els.deleteConversation.disabled = !state.conversation || Boolean(writing);
  els.title.disabled = !state.conversation || Boolean(writing);
  if (state.conversation) {
    refuse(els.deleteConversation, writing, "write-reason");
    refuse(els.title, writing, "write-reason");
  }
  $("fork-conversation").hidden = !(state.conversation && writing && lastMessage());
  const probing = refusals["provider.use"] || "";
  showReason("probe-reason", probing);
  $("probe-open").disabled = Boolean(probing);
  refuse($("probe-open"), probing, "probe-reason");
}

/** The last turn of the open conversation's history: a whole-conversation Fork forks from it. */
function lastMessage() {
  const kept = [...state.messages.values()].filter((m) => m.in_history);
  return kept.sort((a, b) => a.position - b.position || a.id - b.id).at(-1) || null;
}

/** A disabled write control of the transcript (Edit, Delete, Regenerate…), with the reason. */
function writeButton(label, onClick, name) {
  const button = actionButton(label, onClick, name);
  refuse(button, writeRefusal(), "write-reason");
  return button;
}

// ------------------------------------------------------------------ transcript

function messageText(content) {
  if (typeof content === "string") return content;
  return (content || []).map((p) => (p.type === "text" ? p.text : `[${p.type}]`)).join("\n");
}

function actionButton(label, handler, title) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link";
  button.textContent = label;
  if (title) button.setAttribute("aria-label", title);
  button.addEventListener("click", handler);
  return button;
}

async function change(method, url, body) {
  try {
    const data = await api(method, url, body);
    if (data && data.messages && data.runs) applyTranscript(data);
    return data;
  } catch (error) {
    showError(error.message);
    return null;
  }
}

function renderMessage(message) {
  const { el, body } = messageView(message);
  el.dataset.message = message.id;
  el.append(messageActions(message, el, body));
  if (state.editing?.id === message.id) editMessage(message, el, body);
  return el;
}

function messageActions(message, el, body) {
  const bar = document.createElement("div");
  bar.className = "actions";
  const n = `${message.role} turn ${message.position}`;
  bar.append(
    writeButton("Edit", () => editMessage(message, el, body), `Edit ${n}`),
    writeButton("↑", () => change("POST", url("api-move-message", message.id), { direction: "up" }), `Move ${n} up`),
    writeButton("↓", () => change("POST", url("api-move-message", message.id), { direction: "down" }), `Move ${n} down`),
    actionButton("Fork", () => fork(message.id), `Fork from ${n}`),
    writeButton("Delete", () => change("DELETE", url("api-message", message.id)), `Delete ${n}`),
  );
  return bar;
}

function editMessage(message, el, body) {
  // The editor survives re-renders (a teammate's change, a finished answer) until Save or Cancel.
  const parts = Array.isArray(message.content);
  if (state.editing?.id !== message.id) {
    state.editing = { id: message.id, text: parts ? JSON.stringify(message.content, null, 2) : message.content || "" };
  }
  const box = document.createElement("textarea");
  box.rows = 4;
  box.setAttribute("aria-label", "Edit turn");
  box.value = state.editing.text;
  box.addEventListener("input", () => { state.editing.text = box.value; });
  const save = actionButton("Save", async () => {
    let content = box.value;
    if (parts) {
      try { content = JSON.parse(box.value); } catch { showError("content: the content parts are not valid JSON"); return; }
    }
    state.editing = null;
    if (!(await change("PATCH", url("api-message", message.id), { content }))) state.editing = { id: message.id, text: box.value };
  });
  const cancel = actionButton("Cancel", () => { state.editing = null; renderTranscript(); });
  body.replaceChildren(box, save, cancel);
  requestAnimationFrame(() => { if (document.activeElement?.tagName !== "TEXTAREA") box.focus(); });
}

async function fork(messageId) {
  const created = await change("POST", url("api-fork", state.conversation), { message: messageId });
  if (!created) return;
  history.pushState({}, "", url("conversation", created.id));
  await refreshConversationList();
  await loadConversation(created.id);
}

function applyTranscript(data) {
  state.messages.clear();
  addMessages(data.messages);
  const keep = new Set(data.runs.map((r) => r.id));
  for (const id of [...state.runs.keys()]) {
    if (!keep.has(id)) { state.runs.delete(id); state.ledger.forget(id); }
  }
  for (const run of data.runs) upsertRun(run);
  renderTranscript();
}

function formatMs(ms) {
  if (ms == null) return "–";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function footerText(run) {
  const t = run.timing || {};
  const u = run.usage || {};
  const parts = [run.status];
  if (t.ttft_ms != null) parts.push(`first token ${formatMs(t.ttft_ms)}`);
  if (t.reasoning_ms != null) parts.push(`reasoning ${formatMs(t.reasoning_ms)}`);
  if (t.total_ms != null) parts.push(`total ${formatMs(t.total_ms)}`);
  if (t.tokens_per_second != null) parts.push(`${t.tokens_per_second} tokens/s`);
  if (u.total_tokens != null) {
    const usage = `${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens`;
    parts.push(u.estimated ? `${usage} (estimated)` : usage);
  }
  if (run.cost) parts.push(`$${run.cost.usd.toFixed(4)}${run.cost.estimated ? " (estimated)" : ""}`);
  const reasons = (run.finish_reasons || []).filter(Boolean);
  if (reasons.length) parts.push(`finish: ${reasons.join(", ")}`);
  return parts.join(" · ");
}

class RunView {
  constructor(run) {
    this.run = run;
    this.el = document.createElement("article");
    this.el.className = "message assistant run";
    this.el.dataset.run = run.id;
    const head = document.createElement("header");
    head.textContent = `assistant · ${run.model} via ${run.provider}${run.user ? ` · asked by ${run.user}` : ""}`;
    this.choicesEl = document.createElement("div");
    this.choicesEl.className = "choices";
    this.errorEl = document.createElement("p");
    this.errorEl.className = "error run-error";
    this.errorEl.setAttribute("role", "alert");
    this.footer = document.createElement("footer");
    this.footer.className = "run-status";
    this.statusEl = document.createElement("span");
    const inspect = document.createElement("button");
    inspect.type = "button";
    inspect.className = "link inspect";
    inspect.textContent = "Inspect";
    inspect.addEventListener("click", () => openInspector(this.run.id));
    this.footer.append(this.statusEl, " ", inspect);
    this.runActions = document.createElement("span");
    this.runActions.className = "actions";
    this.runActions.append(
      writeButton("Regenerate", () => regenerate(this), "Regenerate this answer"),
      actionButton("Fork", () => { const m = this.message(this.chosenIndex()); if (m) fork(m.id); }, "Fork from this answer"),
      writeButton("Delete", () => change("POST", url("api-hide-run", this.run.id)), "Delete this answer"),
    );
    this.footer.append(" ", this.runActions);
    this.toolForm = document.createElement("form");
    this.toolForm.className = "tool-results";
    this.toolForm.hidden = true;
    this.toolForm.addEventListener("submit", (e) => { e.preventDefault(); sendToolResults(this); });
    this.el.append(head, this.choicesEl, this.errorEl, this.toolForm, this.footer);
    this.choices = new Map();
    this.load(run);
  }
  choice(index) {
    let view = this.choices.get(index);
    if (!view) {
      const box = document.createElement("div");
      box.className = "choice";
      box.dataset.index = index;
      const reasoning = document.createElement("details");
      reasoning.className = "reasoning";
      reasoning.hidden = true;
      const summary = document.createElement("summary");
      summary.textContent = "Reasoning";
      const thought = document.createElement("div");
      reasoning.append(summary, thought);
      const answer = document.createElement("div");
      answer.className = "body markdown";
      const tools = document.createElement("pre");
      tools.className = "tool-calls";
      tools.hidden = true;
      const flags = document.createElement("div");
      flags.className = "flags";
      flags.setAttribute("role", "status");
      const tokens = document.createElement("div");
      tokens.className = "tokens";
      tokens.hidden = true;
      tokens.setAttribute("aria-label", `Tokens of choice ${index + 1}`);
      const tokensToggle = actionButton("Tokens", () => {
        tokens.hidden = !tokens.hidden;
        answer.hidden = !tokens.hidden;
        tokensToggle.setAttribute("aria-pressed", String(!tokens.hidden));
      }, `Show the tokens of choice ${index + 1} with their probabilities`);
      tokensToggle.hidden = true;
      const choose = actionButton("Use this answer", () => this.choose(index), `Use choice ${index + 1} to continue`);
      choose.hidden = true;
      const bar = document.createElement("div");
      bar.className = "actions";
      bar.append(tokensToggle, choose);
      const label = document.createElement("div");
      label.className = "choice-label";
      label.textContent = `Choice ${index + 1}`;
      box.append(label, reasoning, answer, tokens, tools, flags, bar);
      this.choicesEl.append(box);
      view = { box, reasoning, summary, thought, answer: new MarkdownView(answer), answerEl: answer, tools, flags, tokens, tokensToggle, choose, label };
      this.choices.set(index, view);
      this.choicesEl.classList.toggle("many", this.choices.size > 1);
    }
    return view;
  }
  message(index) {
    return [...state.messages.values()].find((m) => m.run === this.run.id && m.choice_index === index);
  }
  async choose(index) {
    const message = this.message(index);
    if (message) await change("POST", url("api-choose", message.id));
  }
  decorate(c) {
    const view = this.choice(c.index);
    const done = !ACTIVE.has(this.run.status);
    const flags = [];
    if (c.finish_reason === "length") flags.push("✂ Cut off: the answer hit max_tokens (finish_reason: length).");
    const check = (this.run.checks || []).find((v) => v.index === c.index);
    if (check) {
      const what = check.kind === "json_schema" ? "Schema" : "JSON";
      flags.push(check.valid ? `✓ ${what}: valid` : `✗ ${what}: ${check.errors.join("; ")}`);
    }
    view.flags.textContent = flags.join("\n");
    const reasoningMs = this.run.timing?.reasoning_ms;
    view.summary.textContent = done && reasoningMs != null ? `Reasoning · ${formatMs(reasoningMs)}` : "Reasoning";
    view.flags.dataset.verdict = check ? (check.valid ? "valid" : "invalid") : "";
    view.label.hidden = this.choices.size < 2;
    if (c.finish_reason) view.label.textContent = `Choice ${c.index + 1} · ${c.finish_reason}`;
    const message = done ? this.message(c.index) : null;
    view.box.classList.toggle("chosen", Boolean(message?.in_history) && this.choices.size > 1);
    view.choose.hidden = !(mayWrite() && message && !message.in_history);
    view.tokensToggle.hidden = !(c.logprobs && c.logprobs.length);
    if (c.logprobs && c.logprobs.length) renderTokens(view.tokens, c.logprobs);
  }
  load(run) {
    this.run = run;
    for (const c of run.choices || []) {
      const view = this.choice(c.index);
      view.answer.reset(c.content || "");
      view.fragments = null;
      view.reasoning.hidden = !c.reasoning;
      view.thought.textContent = c.reasoning || "";
      this.showTools(view, c.tool_calls);
      if (ACTIVE.has(run.status)) scheduleRender(view.answer); else view.answer.render(true);
    }
    for (const c of run.choices || []) this.decorate(c);
    this.update();
  }
  applyDelta(event) {
    for (const d of event.choices) {
      const view = this.choice(d.index);
      if (d.content) { view.answer.append(d.content); scheduleRender(view.answer); }
      if (d.reasoning) { view.reasoning.hidden = false; view.thought.append(d.reasoning); }
      if (d.tool_calls) { view.fragments = (view.fragments || []).concat(d.tool_calls); this.showTools(view, null, view.fragments); }
    }
    this.run.seq = event.seq;
    if (this.run.status === "queued") { this.run.status = "streaming"; this.update(); }
  }
  showTools(view, calls, fragments) {
    if (fragments) calls = assembleToolCalls(fragments);
    view.tools.hidden = !(calls && calls.length);
    if (calls && calls.length) {
      view.tools.textContent = calls.map((c) => `${c.function.name}(${c.function.arguments})`).join("\n");
    }
  }
  chosenIndex() {
    const chosen = [...state.messages.values()].find((m) => m.run === this.run.id && m.in_history);
    return chosen ? chosen.choice_index : (this.run.choices?.[0]?.index ?? 0);
  }
  pendingToolCalls() {
    if (ACTIVE.has(this.run.status)) return [];
    const choice = (this.run.choices || []).find((c) => c.index === this.chosenIndex());
    const calls = choice?.tool_calls || [];
    // Answered already: a tool turn after this run names the call.
    const answered = new Set([...state.messages.values()].filter((m) => m.role === "tool").map((m) => m.tool_call_id));
    return calls.filter((c) => c.id && !answered.has(c.id));
  }
  renderToolForm() {
    const calls = mayWrite() ? this.pendingToolCalls() : [];
    this.toolForm.hidden = !calls.length;
    if (!calls.length) { this.toolForm.replaceChildren(); return; }
    if (this.toolForm.dataset.calls === calls.map((c) => c.id).join(",")) return; // keep what is typed
    this.toolForm.dataset.calls = calls.map((c) => c.id).join(",");
    const fields = calls.map((call) => {
      const wrap = document.createElement("div");
      wrap.className = "field";
      const label = document.createElement("label");
      const id = `tool-result-${this.run.id}-${call.id}`;
      label.htmlFor = id;
      label.textContent = `Result of ${call.function?.name} (${call.id})`;
      const args = document.createElement("code");
      args.textContent = call.function?.arguments || "";
      const box = document.createElement("textarea");
      box.id = id;
      box.rows = 2;
      box.dataset.callId = call.id;
      wrap.append(label, args, box);
      return wrap;
    });
    const submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Submit tool results";
    this.toolForm.replaceChildren(...fields, submit);
  }
  update() {
    const run = this.run;
    this.el.dataset.status = run.status;
    if (this.runActions) this.runActions.hidden = ACTIVE.has(run.status);
    this.renderToolForm();
    this.statusEl.textContent = ACTIVE.has(run.status) ? `${run.status}…` : footerText(run);
    this.errorEl.textContent = run.error ? run.error.message : "";
    this.errorEl.hidden = !run.error;
  }
}

const tooltip = document.createElement("div");
tooltip.className = "token-tip";
tooltip.id = "token-tip";
tooltip.setAttribute("role", "tooltip");
tooltip.hidden = true;
document.body.append(tooltip);

function showAlternatives(span, entry) {
  const rows = (entry.top_logprobs || []).map((alt) => {
    const li = document.createElement("li");
    li.textContent = `${JSON.stringify(alt.token)}  ${(Math.exp(alt.logprob) * 100).toFixed(1)}%`;
    return li;
  });
  const head = document.createElement("strong");
  head.textContent = `${JSON.stringify(entry.token)}  ${(Math.exp(entry.logprob) * 100).toFixed(1)}% (logprob ${entry.logprob.toFixed(3)})`;
  const list = document.createElement("ol");
  list.append(...rows);
  tooltip.replaceChildren(head, list);
  const box = span.getBoundingClientRect();
  tooltip.style.left = `${box.left + window.scrollX}px`;
  tooltip.style.top = `${box.bottom + window.scrollY + 4}px`;
  tooltip.hidden = false;
}

function renderTokens(container, logprobs) {
  const spans = logprobs.map((entry) => {
    const span = document.createElement("span");
    span.className = "token";
    span.textContent = entry.token;
    span.tabIndex = 0;
    const p = Math.exp(entry.logprob ?? 0);
    span.dataset.p = p.toFixed(3);
    // Low probability, strong shade: certain tokens stay plain.
    span.style.backgroundColor = `rgba(255, 140, 0, ${(1 - p) * 0.6})`;
    span.setAttribute("aria-describedby", "token-tip");
    span.setAttribute("aria-label", `${entry.token}: ${(p * 100).toFixed(1)}%`);
    const show = () => showAlternatives(span, entry);
    span.addEventListener("mouseenter", show);
    span.addEventListener("focus", show);
    span.addEventListener("mouseleave", () => { tooltip.hidden = true; });
    span.addEventListener("blur", () => { tooltip.hidden = true; });
    return span;
  });
  container.replaceChildren(...spans);
}

async function sendToolResults(view) {
  const boxes = [...view.toolForm.querySelectorAll("textarea")];
  for (const box of boxes) {
    const added = await change("POST", url("api-add-message", state.conversation), {
      role: "tool", tool_call_id: box.dataset.callId, content: box.value,
    });
    if (!added) return;
  }
  await send({ continueOnly: true });
}

async function regenerate(view) {
  const hidden = await change("POST", url("api-hide-run", view.run.id));
  if (hidden) await send({ continueOnly: true });
}

function renderTranscript() {
  const items = [];
  for (const m of state.messages.values()) {
    if (m.run != null && state.runs.has(m.run)) continue; // shown inside its run
    if (m.role === "system" && m.position === 0) continue; // shown in the System prompt box
    items.push({ key: [m.position, 0, m.id], el: renderMessage(m) });
  }
  for (const view of state.runs.values()) items.push({ key: [view.run.position ?? 1e9, 1, view.run.id], el: view.el });
  items.sort((a, b) => a.key[0] - b.key[0] || a.key[1] - b.key[1] || a.key[2] - b.key[2]);
  els.transcript.replaceChildren(...items.map((i) => i.el));
  if (!items.length) {
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = "Pick a provider and model, write a message, and press Send (Ctrl+Enter).";
    els.transcript.append(hint);
  }
  updateButtons();
}

function scrollToEnd() {
  const t = els.transcript;
  if (t.scrollHeight - t.scrollTop - t.clientHeight < 200) t.scrollTop = t.scrollHeight;
}

function addMessages(messages) {
  for (const m of messages || []) state.messages.set(m.id, m);
  const system = [...state.messages.values()].find((m) => m.role === "system" && m.position === 0);
  if (system && document.activeElement !== els.system) els.system.value = messageText(system.content);
}

function upsertRun(run) {
  // The server's run carries `position` only in full transcripts; keep what we know.
  const existing = state.runs.get(run.id);
  if (existing && state.ledger.outdated(run)) return existing;
  state.ledger.loaded(run);
  if (existing) {
    existing.load({ ...existing.run, ...run });
    return existing;
  }
  const view = new RunView(run);
  state.runs.set(run.id, view);
  return view;
}

async function loadConversation(id) {
  if (state.socket && id !== state.conversation) {
    state.socket.close();
    state.socket = null;
    els.connection.textContent = "";
  }
  state.conversation = id;
  state.creator = null;
  state.messages.clear();
  state.runs.clear();
  state.ledger = new RunLedger();
  if (!id) {
    els.title.value = "";
    showWriteAccess(null);
    renderTranscript();
    document.dispatchEvent(new CustomEvent("playground:conversation", { detail: { id: null } }));
    return;
  }
  const data = await api("GET", url("api-conversation", id));
  state.creator = data.creator;
  els.title.value = data.title;
  showWriteAccess(data);
  els.system.value = "";
  addMessages(data.messages);
  for (const run of data.runs) upsertRun(run);
  renderTranscript();
  els.transcript.scrollTop = els.transcript.scrollHeight;
  connect();
  highlightConversation();
  document.dispatchEvent(new CustomEvent("playground:conversation", { detail: { id } }));
}

// ------------------------------------------------------------------ websocket

// The socket's rules (repeats, stale snapshots, reconnecting, close codes, a quiet run
// read again) are lib/conversation-socket.js's; this page shows what it hands over.
function connect() {
  if (state.socket) state.socket.close();
  state.socket = null;
  if (!state.conversation) return;
  state.socket = new ConversationSocket(state.conversation, {
    ledger: state.ledger, onEvent: handleEvent, onState: showConnection, onQuiet: refreshTranscript,
  });
}

const CONNECTION_TEXT = {
  connecting: "connecting…", live: "live", reconnecting: "reconnecting…", "logged-out": "logged out", forbidden: "no access",
};
function showConnection(status, socket) {
  // 4409: the user's role changed; the socket reconnects under it, and the page asks for a reload.
  if (socket.roleChanged) state.roleChanged = true;
  els.connection.textContent = status === "live" && state.roleChanged
    ? "live · your role changed: reload the page" : CONNECTION_TEXT[status] ?? "";
}

// Returns false for an event it did not apply (a delta of a run it does not show).
function handleEvent(event) {
  switch (event.type) {
    case "sync": {
      if (event.stale.length) refreshTranscript(); // runs that ended while the socket was away
      break;
    }
    case "snapshot": {
      upsertRun(event.run);
      renderTranscript();
      break;
    }
    case "run.started": {
      addMessages(event.messages);
      if (!state.runs.has(event.run.id)) upsertRun(event.run);
      renderTranscript();
      scrollToEnd();
      break;
    }
    case "run.delta": {
      const view = state.runs.get(event.run);
      if (!view) return false;
      view.applyDelta(event);
      updateButtons();
      scrollToEnd();
      break;
    }
    case "run.done": {
      addMessages(event.messages);
      upsertRun(event.run);
      renderTranscript();
      scrollToEnd();
      break;
    }
    case "presence": {
      showPresence(event.viewers);
      break;
    }
    case "conversation.changed": {
      if (event.deleted) {
        showError("A teammate deleted this conversation.");
        history.pushState({}, "", url("index"));
        loadConversation(null);
      } else if (event.messages) {
        refreshTranscript();
      } else if (document.activeElement !== els.title) {
        els.title.value = event.title;
      }
      refreshConversationList();
      break;
    }
    default:
  }
  return true;
}

async function refreshTranscript() {
  if (!state.conversation) return;
  applyTranscript(await api("GET", url("api-conversation", state.conversation)));
}

// ------------------------------------------------------------------ parameters

function paramInputs() { return document.querySelectorAll("[data-param]"); }

function readParams() { return readParamFields(paramInputs(), config.parameters); }

function showFieldErrors(errors) {
  showParamErrors([...paramInputs()].map((input) => [input.dataset.param, input]), errors);
  const general = Object.entries(errors)
    .filter(([name]) => !document.querySelector(`[data-param="${name}"]`))
    .map(([name, message]) => `${name}: ${message}`);
  const fieldNames = Object.keys(errors).filter((name) => document.querySelector(`[data-param="${name}"]`));
  const lines = [...general];
  if (fieldNames.length) lines.push(`Fix the highlighted parameters: ${fieldNames.join(", ")}.`);
  showError(lines.join(" "));
}

function showError(text) {
  els.error.textContent = text;
  els.error.hidden = !text;
}

function saveSettings() {
  const values = {};
  for (const input of paramInputs()) values[input.id] = input.type === "checkbox" ? input.checked : input.value;
  const sendReasoning = $("send-reasoning").checked;
  localStorage.setItem("playground.settings", JSON.stringify({ provider: els.provider.value, model: els.model.value, values, sendReasoning }));
}

function restoreSettings() {
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem("playground.settings") || "{}"); } catch { /* ignore */ }
  for (const [id, value] of Object.entries(saved.values || {})) {
    const input = document.getElementById(id);
    if (!input) continue;
    if (input.type === "checkbox") input.checked = value; else input.value = value;
  }
  if (saved.provider && [...els.provider.options].some((o) => o.value === saved.provider)) els.provider.value = saved.provider;
  $("send-reasoning").checked = Boolean(saved.sendReasoning);
  return saved.model;
}

let modelsRequest = 0;
async function loadModels(preferred) {
  const ticket = ++modelsRequest;
  const provider = config.providers.find((p) => String(p.id) === els.provider.value);
  els.modelOptions.replaceChildren();
  els.modelsNote.textContent = "";
  if (!provider) return;
  let models = provider.models;
  try {
    const data = await api("GET", url("api-models", provider.id));
    models = data.models.length ? data.models : models;
    if (data.error) els.modelsNote.textContent = `Model list unavailable: ${data.error} Type a model name.`;
  } catch (error) {
    els.modelsNote.textContent = `Model list unavailable: ${error.message}`;
  }
  if (ticket !== modelsRequest) return; // the provider changed meanwhile
  for (const name of models) {
    const option = document.createElement("option");
    option.value = name;
    els.modelOptions.append(option);
  }
  // Never under someone typing a model name: the list may arrive mid-word.
  if (document.activeElement === els.model) return;
  if (preferred) els.model.value = preferred;
  else if (!els.model.value && models.length) els.model.value = models[0];
}

// ------------------------------------------------------------------ actions

const attachments = [];

function renderAttachments() {
  const list = $("attachments");
  list.replaceChildren(...attachments.map((part, i) => {
    const li = document.createElement("li");
    const url = part[part.type].url;
    li.textContent = `${part.type === "video_url" ? "video" : "image"}: ${url.startsWith("data:") ? "uploaded file" : url}`;
    li.append(" ", actionButton("Remove", () => { attachments.splice(i, 1); renderAttachments(); }, `Remove attachment ${i + 1}`));
    return li;
  }));
}

function attach(type, url) {
  if (!url) return;
  attachments.push({ type, [type]: { url } });
  renderAttachments();
}

async function send({ continueOnly = false } = {}) {
  if (isStreaming()) { showError(STILL_ANSWERING); return; }
  showError("");
  const { params, extra, errors } = readParams();
  if (!els.model.value.trim()) errors.model = "choose or type a model";
  if (!continueOnly && !els.message.value.trim() && !attachments.length) errors.message = "write a message";
  if (Object.keys(errors).length) { showFieldErrors(errors); return; }
  showFieldErrors({});
  els.send.disabled = true;
  let message = continueOnly ? "" : els.message.value;
  if (!continueOnly && attachments.length) {
    message = [...(message.trim() ? [{ type: "text", text: message }] : []), ...attachments];
  }
  // Read the form before a new conversation is loaded: loading resets the System prompt.
  const submission = {
    provider: Number(els.provider.value),
    model: els.model.value.trim(),
    system: els.system.value,
    message,
    continue: continueOnly,
    send_reasoning: $("send-reasoning").checked,
    params,
    extra_body: extra,
  };
  try {
    if (!state.conversation) {
      const created = await api("POST", url("api-conversations"), {});
      history.pushState({}, "", url("conversation", created.id));
      await refreshConversationList();
      await loadConversation(created.id);
      els.system.value = submission.system;
    }
    state.socket?.touch(); // events are due from now: the quiet check counts from here
    const data = await api("POST", url("api-submit", state.conversation), submission);
    if (!continueOnly) {
      els.message.value = ""; // only once the server has it: a refused message is kept
      attachments.length = 0;
      renderAttachments();
    }
    saveSettings();
    addMessages(data.messages);
    if (!state.runs.has(data.run.id)) upsertRun(data.run);
    renderTranscript();
    els.transcript.scrollTop = els.transcript.scrollHeight;
    refreshConversationList();
  } catch (error) {
    if (error.fields && Object.keys(error.fields).length) showFieldErrors(error.fields);
    else showError(error.message);
  } finally {
    updateButtons();
  }
}

async function stopRuns() {
  const active = [...state.runs.values()].filter((v) => ACTIVE.has(v.run.status));
  els.stop.disabled = true;
  await Promise.all(active.map((v) => api("POST", url("api-stop", v.run.id)).catch((e) => showError(e.message))));
}

// The server refuses a second run while one streams in the conversation (409): say so on Send.
const STILL_ANSWERING = "This conversation is still answering; stop it or wait.";

function isStreaming() {
  return [...state.runs.values()].some((v) => ACTIVE.has(v.run.status));
}

function updateButtons() {
  const streaming = isStreaming();
  els.stop.disabled = !streaming || !mayWrite();
  els.send.disabled = !mayWrite() || streaming;
  const reason = $("send-reason");
  reason.textContent = streaming && mayWrite() ? STILL_ANSWERING : "";
  reason.hidden = !reason.textContent;
  if (reason.textContent) els.send.title = reason.textContent;
  else els.send.removeAttribute("title");
  applyPermissions();
}

// ------------------------------------------------------------------ conversations

// The list's filter (Mine / Shared / All / Trash) is kept in the address (?filter=) and
// in localStorage; the sort (last activity, newest first; or created) in localStorage.
const LIST_FILTERS = ["mine", "shared", "all", "trash"];
const list = {
  filter: (() => {
    const wanted = new URLSearchParams(location.search).get("filter") || localStorage.getItem("playground.listFilter");
    return LIST_FILTERS.includes(wanted) ? wanted : "all";
  })(),
  sort: localStorage.getItem("playground.listSort") === "created" ? "created" : "activity",
  access: null, // the open conversation's: { may_write, refusal, visibility }
};

function chooseListFilter(filter) {
  list.filter = filter;
  localStorage.setItem("playground.listFilter", filter);
  const address = new URL(location.href);
  if (filter === "all") address.searchParams.delete("filter");
  else address.searchParams.set("filter", filter);
  history.replaceState(history.state, "", address);
  refreshConversationList();
}

function when(iso) {
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function conversationLink(c, text) {
  const a = document.createElement("a");
  a.href = url("conversation", c.id);
  a.textContent = text;
  a.dataset.id = c.id;
  a.addEventListener("click", (e) => {
    e.preventDefault();
    history.pushState({}, "", a.href);
    loadConversation(c.id);
  });
  return a;
}

function listMeta(c, text) {
  const meta = document.createElement("small");
  meta.className = "meta";
  meta.textContent = text;
  if (c.visibility === "private") {
    const lock = document.createElement("span");
    lock.className = "lock";
    lock.setAttribute("role", "img");
    lock.setAttribute("aria-label", "Private");
    lock.title = "Private: only its creator and the workspace's owners and admins see it";
    lock.textContent = "🔒 ";
    meta.prepend(lock);
  }
  return meta;
}

function trashItem(c, days) {
  const li = document.createElement("li");
  li.className = "trashed";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = c.title;
  const purge = new Date(new Date(c.deleted_at).getTime() + days * 86400000);
  const meta = listMeta(c, `${c.creator || "someone"} · deleted ${when(c.deleted_at)} · purged after ${when(purge.toISOString())}`);
  const restore = document.createElement("button");
  restore.type = "button";
  restore.textContent = "Restore";
  restore.addEventListener("click", async () => {
    try {
      await api("POST", url("api-restore-conversation", c.id));
      refreshConversationList();
    } catch (error) { showError(error.message); }
  });
  li.append(title, meta, restore);
  return li;
}

function comparisonItem(c) {
  const li = document.createElement("li");
  li.className = "comparison";
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = c.title;
  const columns = document.createElement("ul");
  columns.setAttribute("aria-label", c.title);
  columns.append(...c.columns.map((id, i) => {
    const item = document.createElement("li");
    item.append(conversationLink({ id }, c.column_titles[i]));
    return item;
  }));
  details.append(summary, columns);
  if (c.columns.includes(state.conversation)) details.open = true;
  li.append(details, listMeta(c, `${c.creator || "someone"} · ${when(c.updated_at)}`));
  return li;
}

let listRequest = 0;
async function refreshConversationList() {
  for (const button of document.querySelectorAll(".list-filters [data-filter]")) {
    button.setAttribute("aria-pressed", String(button.dataset.filter === list.filter));
  }
  const query = list.filter === "trash" ? "" : els.filter.value.trim();
  const ticket = ++listRequest;
  const data = await api("GET", url("api-conversations", null, { q: query, filter: list.filter, sort: list.sort }));
  if (ticket !== listRequest) return; // a later search answered first
  const note = $("list-note");
  note.hidden = list.filter !== "trash";
  if (list.filter === "trash") {
    note.textContent = `Deleted conversations you may restore, kept ${data.trash_days} days.`;
    const items = data.conversations.map((c) => trashItem(c, data.trash_days));
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "note";
      li.textContent = "The trash is empty.";
      items.push(li);
    }
    els.list.replaceChildren(...items);
    return;
  }
  // The server titles a conversation from its first message: show that in the head too.
  const current = data.conversations.find((c) => c.id === state.conversation);
  if (current && document.activeElement !== els.title) els.title.value = current.title;
  const items = data.conversations.map((c) => {
    if (c.kind === "comparison") return comparisonItem(c);
    const li = document.createElement("li");
    const a = conversationLink(c, c.title);
    li.append(a);
    if (c.match) {
      const match = document.createElement("small");
      match.className = "match";
      match.textContent = c.match;
      a.append(match);
    }
    const at = list.sort === "created" ? `created ${when(c.created_at)}` : when(c.updated_at);
    li.append(listMeta(c, `${c.creator || "someone"} · ${at}`));
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "note";
    li.textContent = query ? `No conversation mentions “${query}”.` : "No conversations here yet.";
    items.push(li);
  }
  els.list.replaceChildren(...items);
  highlightConversation();
}

function highlightConversation() {
  for (const a of els.list.querySelectorAll("a")) {
    if (Number(a.dataset.id) === state.conversation) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  showWriteAccess(list.access && state.conversation ? list.access : null);
  applyPermissions();
}

/** Rename, delete and visibility are for whoever may change the open conversation
 * (its creator, owners and admins): disabled for others, with the server's reason. */
function showWriteAccess(data) {
  list.access = data ? { may_write: data.may_write !== false, refusal: data.refusal || "", visibility: data.visibility } : null;
  const shared = $("conversation-shared");
  const open = Boolean(state.conversation && list.access);
  const reason = open && !list.access.may_write ? list.access.refusal : "";
  shared.checked = open && list.access.visibility === "shared";
  for (const control of [els.title, els.deleteConversation, shared]) {
    control.disabled = !open || Boolean(reason);
    if (reason) {
      control.title = reason;
      control.setAttribute("aria-description", reason);
    } else {
      control.removeAttribute("title");
      control.removeAttribute("aria-description");
    }
  }
}

async function setVisibility() {
  const shared = $("conversation-shared");
  if (!state.conversation) return;
  try {
    const data = await api("PATCH", url("api-conversation", state.conversation), { visibility: shared.checked ? "shared" : "private" });
    list.access.visibility = data.visibility;
    refreshConversationList();
  } catch (error) {
    shared.checked = !shared.checked;
    showError(error.message);
  }
}

async function renameConversation() {
  const title = els.title.value.trim();
  if (!state.conversation || !title) return;
  try {
    await api("PATCH", url("api-conversation", state.conversation), { title });
    refreshConversationList();
  } catch (error) { showError(error.message); }
}

async function deleteConversation() {
  if (!state.conversation || !confirm("Move this conversation to the trash? It can be restored from Trash.")) return;
  try {
    await api("DELETE", url("api-conversation", state.conversation));
  } catch (error) { showError(error.message); return; }
  history.pushState({}, "", url("index"));
  if (state.socket) state.socket.close();
  state.socket = null;
  await loadConversation(null);
  refreshConversationList();
}

// ------------------------------------------------------------------ inspector

const inspector = {
  dialog: $("inspector"), title: $("inspector-title"), body: $("inspect-body"), headers: $("inspect-headers"),
  status: $("inspect-status"), responseHeaders: $("inspect-response-headers"), frames: $("inspect-frames"),
  framesNote: $("inspect-frames-note"), language: $("code-language"), code: $("code-snippet"), snippets: {},
};

async function openInspector(runId) {
  const run = await api("GET", url("api-run", runId));
  inspector.title.textContent = `Run ${run.id} · ${run.model} via ${run.provider} · ${run.status}`;
  inspector.body.textContent = JSON.stringify(run.request_body, null, 2);
  inspector.headers.textContent = Object.entries(run.request_headers).map(([k, v]) => `${k}: ${v}`).join("\n");
  inspector.status.textContent = run.response_status ? `HTTP ${run.response_status}` : "No response received.";
  inspector.responseHeaders.textContent = Object.entries(run.response_headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
  inspector.frames.replaceChildren(...run.raw_frames.map(([at, data, event]) => {
    const row = document.createElement("tr");
    const time = document.createElement("td");
    time.textContent = at.toFixed(1);
    const cell = document.createElement("td");
    cell.textContent = event ? `event: ${event}\ndata: ${data}` : `data: ${data}`;
    row.append(time, cell);
    return row;
  }));
  const replaced = run.decode_errors ? `; ${run.decode_errors} invalid UTF-8 sequence${run.decode_errors === 1 ? "" : "s"} replaced (shown as \uFFFD)` : "";
  inspector.framesNote.textContent = `${run.raw_frames.length} frames` + (run.frames_dropped ? `, ${run.frames_dropped} more not kept` : "") + replaced;
  renderParamNotes(run);
  inspector.snippets = run.code;
  inspector.code.textContent = run.code[inspector.language.value];
  selectTab("tab-request");
  inspector.dialog.showModal();
}

function renderParamNotes(run) {
  const box = $("inspect-params");
  const notes = run.param_notes || {};
  const section = (title, entries) => {
    const heading = document.createElement("h4");
    heading.textContent = title;
    const list = document.createElement("ul");
    list.setAttribute("aria-label", title);
    for (const [name, why] of entries) {
      const item = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = name;
      item.append(code, `: ${why}`);
      list.append(item);
    }
    return [heading, list];
  };
  const parts = [];
  if (notes.unsent) parts.push(...section("Set but not sent", Object.entries(notes.unsent)));
  if (notes.ignored) parts.push(...section("Sent but ignored or rejected", Object.entries(notes.ignored)));
  if (!parts.length) {
    const provider = config.providers.find((p) => p.name === run.provider);
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = provider?.capabilities?.probed_at
      ? "Every parameter set was sent, and the provider's profile flags none of them."
      : "Every parameter set was sent. This provider has not been probed, so what it ignores is not known.";
    parts.push(p);
  }
  box.replaceChildren(...parts);
}

function selectTab(id) {
  for (const tab of inspector.dialog.querySelectorAll('[role="tab"]')) {
    const selected = tab.id === id;
    tab.setAttribute("aria-selected", String(selected));
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
}

// ------------------------------------------------------------------ capability profile and Probe

const FLAGGED = new Set(["ignored", "rejected"]);
function currentProvider() { return config.providers.find((p) => String(p.id) === els.provider.value); }

/** Marks the parameters the chosen provider is known to ignore or reject, from its profile. */
function markCapabilities() {
  const profile = currentProvider()?.capabilities || {};
  const known = profile.parameters || {};
  for (const mark of document.querySelectorAll(".cap-mark")) mark.remove();
  for (const input of paramInputs()) {
    const entry = known[input.dataset.param.split(".")[0]];
    const described = (input.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && !id.endsWith("-cap"));
    if (entry && FLAGGED.has(entry.status)) {
      const mark = document.createElement("small");
      mark.className = "cap-mark";
      mark.id = `${input.id}-cap`;
      mark.dataset.status = entry.status;
      mark.title = entry.note;
      const left = entry.status === "rejected" && profile.omit_rejected;
      mark.textContent = left ? "rejected · left out" : entry.status;
      const why = document.createElement("span");
      why.className = "visually-hidden";
      why.textContent = `: ${entry.note}`;
      mark.append(why);
      input.closest(".field").querySelector("label").after(mark);
      described.push(mark.id);
    }
    if (described.length) input.setAttribute("aria-describedby", described.join(" "));
    else input.removeAttribute("aria-describedby");
  }
  const facts = [];
  if (profile.probed_at) {
    facts.push(`Probed ${profile.probed_at.slice(0, 10)} with ${profile.model}`);
    if (profile.reasoning_field) facts.push(`reasoning in ${profile.reasoning_field}`);
    if (profile.streams_usage === false) facts.push("no usage when streaming");
  }
  $("profile-note").textContent = facts.length ? facts.join(" · ") : "Not probed: Probe tests which parameters it honours.";
}

function renderProbe(profile) {
  const rows = Object.entries(profile?.parameters || {}).map(([name, entry]) => {
    const row = document.createElement("tr");
    row.dataset.status = entry.status;
    for (const text of [name, entry.status, entry.note]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  $("probe-results").replaceChildren(...rows);
  $("probe-results").closest("table").hidden = !rows.length;
  $("probe-omit-row").hidden = !(config.canAdmin && rows.length);
  $("probe-omit").checked = Boolean(profile?.omit_rejected);
}

function openProbe() {
  const provider = currentProvider();
  if (!provider) return;
  $("probe-title").textContent = `Probe ${provider.name}`;
  $("probe-model").value = els.model.value.trim() || provider.capabilities?.model || "";
  $("probe-status").textContent = provider.capabilities?.probed_at
    ? `Last probed ${provider.capabilities.probed_at.slice(0, 16).replace("T", " ")} with ${provider.capabilities.model}.`
    : "Not probed yet.";
  renderProbe(provider.capabilities);
  $("probe-dialog").showModal();
}

async function runProbe(event) {
  event.preventDefault();
  const provider = currentProvider();
  const button = $("probe-run");
  button.disabled = true;
  $("probe-status").textContent = "Probing… one small request per feature; this can take a minute.";
  try {
    const data = await api("POST", url("api-probe", provider.id), { model: $("probe-model").value.trim() });
    provider.capabilities = data.capabilities;
    const counts = {};
    for (const entry of Object.values(data.capabilities.parameters)) counts[entry.status] = (counts[entry.status] || 0) + 1;
    $("probe-status").textContent = `Done: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ")}.`;
    renderProbe(data.capabilities);
    markCapabilities();
  } catch (error) {
    $("probe-status").textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

async function setOmitRejected() {
  const provider = currentProvider();
  try {
    const data = await api("PATCH", url("api-profile", provider.id), { omit_rejected: $("probe-omit").checked });
    provider.capabilities = data.capabilities;
    markCapabilities();
  } catch (error) {
    $("probe-status").textContent = error.message;
    $("probe-omit").checked = !$("probe-omit").checked;
  }
}

// ------------------------------------------------------------------ import

function setParams(params, extra) { fillParams(paramInputs(), params, extra); }

async function importRequest(event) {
  event.preventDefault();
  const error = $("import-error");
  error.hidden = true;
  try {
    const data = await api("POST", url("api-import"), { text: $("import-text").value });
    $("import-dialog").close();
    history.pushState({}, "", url("conversation", data.conversation.id));
    await loadConversation(data.conversation.id);
    refreshConversationList();
    els.model.value = data.model;
    els.system.value = data.system;
    els.message.value = typeof data.message === "string" ? data.message : JSON.stringify(data.message);
    setParams(data.params, data.extra_body);
    const skipped = Object.entries(data.skipped).map(([name, why]) => `${name} ${why}`);
    showError(skipped.length ? `Imported. Not loaded: ${skipped.join("; ")}.` : "");
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

async function addTurn(event) {
  event.preventDefault();
  if (!state.conversation) {
    const created = await api("POST", url("api-conversations"), {});
    history.pushState({}, "", url("conversation", created.id));
    await refreshConversationList();
    await loadConversation(created.id);
  }
  const role = $("add-turn-role").value;
  const body = { role, content: $("add-turn-content").value };
  if (role === "tool") body.tool_call_id = $("add-turn-call-id").value;
  try {
    applyTranscript(await api("POST", url("api-add-message", state.conversation), body));
    $("add-turn-content").value = "";
    $("add-turn-dialog").close();
  } catch (error) {
    $("add-turn-error").textContent = error.message;
    $("add-turn-error").hidden = false;
  }
}

// ------------------------------------------------------------------ for presets.js and history.js

/** The panel as a run would send it: provider, model, system prompt, wire parameters. */
export function readPanel() {
  const { params, extra, errors } = readParams();
  return { provider: Number(els.provider.value) || null, model: els.model.value.trim(), system: els.system.value, params, extra_body: extra, errors };
}

/** Fills the panel; parameters not given are cleared (unset, so not sent). */
export function applyPanel({ provider = null, model = "", system = "", params = {}, extra_body = {} }) {
  if (provider && [...els.provider.options].some((o) => o.value === String(provider)) && els.provider.value !== String(provider)) {
    els.provider.value = String(provider);
    loadModels();
    markCapabilities();
  }
  els.model.value = model || "";
  els.system.value = system || "";
  setParams(params, extra_body || {});
  showFieldErrors({});
  saveSettings();
}

/** Shows a conversation (after creating or importing it) and updates the list and address. */
export async function openConversation(id) {
  history.pushState({}, "", id ? url("conversation", id) : url("index"));
  await loadConversation(id);
  await refreshConversationList();
}

export function currentConversation() { return state.conversation; }
export { showError };

// ------------------------------------------------------------------ start

function init() {
  for (const p of config.providers) {
    const option = document.createElement("option");
    option.value = p.id;
    option.textContent = p.key_hint && !p.is_demo ? `${p.name} (${p.key_hint})` : p.name;
    els.provider.append(option);
  }
  const preferredModel = restoreSettings();
  loadModels(preferredModel);
  markCapabilities();
  els.provider.addEventListener("change", () => { els.model.value = ""; loadModels(); markCapabilities(); });
  $("probe-open").addEventListener("click", openProbe);
  $("fork-conversation").addEventListener("click", () => { const m = lastMessage(); if (m) fork(m.id); });
  $("probe-close").addEventListener("click", () => $("probe-dialog").close());
  $("probe-form").addEventListener("submit", runProbe);
  $("probe-omit").addEventListener("change", setOmitRejected);
  els.composer.addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("attach-image").addEventListener("change", (e) => {
    for (const file of e.target.files) {
      const reader = new FileReader();
      reader.onload = () => attach("image_url", reader.result);
      reader.readAsDataURL(file);
    }
    e.target.value = "";
  });
  $("attach-url-add").addEventListener("click", () => {
    const url = $("attach-url").value.trim();
    if (!/^(https?:|data:)/i.test(url)) { showError("Attachment URL: give an http(s) or data: URL"); return; }
    attach($("attach-kind").value, url);
    $("attach-url").value = "";
  });
  $("add-turn-open").addEventListener("click", () => { $("add-turn-error").hidden = true; $("add-turn-dialog").showModal(); });
  $("add-turn-cancel").addEventListener("click", () => $("add-turn-dialog").close());
  $("add-turn-role").addEventListener("change", () => { $("add-turn-tool").hidden = $("add-turn-role").value !== "tool"; });
  $("add-turn-form").addEventListener("submit", addTurn);
  els.message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); send(); }
  });
  els.stop.addEventListener("click", stopRuns);
  $("inspector-close").addEventListener("click", () => inspector.dialog.close());
  for (const tab of inspector.dialog.querySelectorAll('[role="tab"]')) tab.addEventListener("click", () => selectTab(tab.id));
  inspector.language.addEventListener("change", () => { inspector.code.textContent = inspector.snippets[inspector.language.value]; });
  $("code-copy").addEventListener("click", () => navigator.clipboard?.writeText(inspector.code.textContent));
  $("import-open").addEventListener("click", () => { $("import-error").hidden = true; $("import-dialog").showModal(); });
  $("import-cancel").addEventListener("click", () => $("import-dialog").close());
  $("import-form").addEventListener("submit", importRequest);
  els.newConversation.addEventListener("click", () => { history.pushState({}, "", url("index")); loadConversation(null); highlightConversation(); els.message.focus(); });
  els.deleteConversation.addEventListener("click", deleteConversation);
  els.title.addEventListener("change", renameConversation);
  $("conversation-shared").addEventListener("change", setVisibility);
  for (const button of document.querySelectorAll(".list-filters [data-filter]")) {
    button.addEventListener("click", () => chooseListFilter(button.dataset.filter));
  }
  $("conversation-sort").value = list.sort;
  $("conversation-sort").addEventListener("change", (e) => {
    list.sort = e.target.value;
    localStorage.setItem("playground.listSort", list.sort);
    refreshConversationList();
  });
  let searchTimer = null;
  els.filter.addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(refreshConversationList, 200); });
  window.addEventListener("popstate", () => {
    loadConversation(idIn("conversation", location.pathname));
  });
  refreshConversationList();
  loadConversation(state.conversation);
  updateButtons();
  startLiveWorkspace();
}

// ------------------------------------------------------------------ the live workspace

// The workspace's socket (lib/live-socket.js) says what teammates change; the list is read
// again (the server decides what this user may see), runs in progress are marked, and
// "who did what" is said in the activity line. The open conversation's socket says who
// else has it open ("Also here").
const LISTED_TEXT = {
  created: "created a conversation", renamed: "renamed a conversation", deleted: "deleted a conversation",
  restored: "restored a conversation", visibility: "changed who sees a conversation",
  "run.started": "started a run", "run.done": "finished a run",
};

function startLiveWorkspace() {
  const activity = $("workspace-activity");
  let running = new Set();
  let refreshTimer = null;
  const markRunning = () => {
    for (const a of els.list.querySelectorAll("a[data-id]")) {
      const li = a.closest("li");
      const on = running.has(Number(a.dataset.id));
      let badge = li.querySelector(":scope > .running-badge");
      if (on && !badge) {
        badge = document.createElement("span");
        badge.className = "running-badge";
        badge.textContent = "running…";
        li.append(badge);
      } else if (!on && badge) badge.remove();
    }
  };
  // The list is rendered elsewhere: mark it again whenever it is.
  new MutationObserver(markRunning).observe(els.list, { childList: true });
  state.workspaceSocket = new WorkspaceSocket(config.workspace, {
    onRunning: (ids) => { running = new Set(ids); markRunning(); },
    onListed: (event) => {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(refreshConversationList, 150);
      if (event.by && event.by !== config.user && LISTED_TEXT[event.action]) {
        activity.textContent = `${event.by} ${LISTED_TEXT[event.action]}`;
      }
    },
  });
  document.addEventListener("playground:conversation", () => showPresence([]));
}

function showPresence(viewers) {
  const el = $("presence");
  el.textContent = viewers.length ? `Also here: ${viewers.join(", ")}` : "";
  el.hidden = !viewers.length;
}

init();
