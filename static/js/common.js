// What the playground and Compare pages share: sanitized Markdown, the JSON API, incremental
// rendering of a growing answer, and assembling streamed tool-call fragments.
// Model output is untrusted: markdown goes through marked, then DOMPurify.
import { marked } from "./vendor/marked-18.2.1.esm.js";
import DOMPurify from "./vendor/purify-3.4.18.esm.js";

marked.use({ gfm: true, breaks: false });
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer"); }
});
export const renderMarkdown = (text) => DOMPurify.sanitize(marked.parse(text), { USE_PROFILES: { html: true } });

const SAFE_MEDIA = /^(https?:|data:(image|video)\/)/i;

/** A message's content parts (text, image_url, video_url) appended to `body`; media only from
 * http(s) or data: image/video URLs. */
export function renderParts(body, content) {
  for (const part of content) {
    if (part.type === "text") {
      const p = document.createElement("p");
      p.textContent = part.text;
      body.append(p);
    } else {
      const url = part[part.type]?.url || "";
      const media = document.createElement(part.type === "video_url" ? "video" : "img");
      if (SAFE_MEDIA.test(url)) media.src = url;
      if (part.type === "video_url") media.controls = true; else media.alt = "attached image";
      media.className = "part";
      body.append(media);
    }
  }
}

/** One transcript message as an <article> (role header, body: parts, sanitised Markdown for
 * an answer, text otherwise, tool calls); returns {el, body} so a page can add its controls. */
export function messageView(message) {
  const el = document.createElement("article");
  el.className = `message ${message.role}`;
  el.dataset.position = message.position;
  const who = document.createElement("header");
  who.textContent = message.tool_call_id ? `${message.role} · ${message.tool_call_id}` : message.role;
  const body = document.createElement("div");
  body.className = "body";
  if (Array.isArray(message.content)) renderParts(body, message.content);
  else if (message.role === "assistant") body.innerHTML = renderMarkdown(message.content || "");
  else body.textContent = message.content;
  if (message.tool_calls) {
    const calls = document.createElement("pre");
    calls.className = "tool-calls";
    calls.textContent = message.tool_calls.map((c) => `${c.function?.name}(${c.function?.arguments}) [${c.id}]`).join("\n");
    body.append(calls);
  }
  el.append(who, body);
  return { el, body };
}

// ------------------------------------------------------------------ HTTP

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

// JSON in and out; a refusal throws an Error with the server's words, its per-field
// errors, its status, and whether the relay was busy.
export async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await response.json(); } catch { /* empty or not JSON */ }
  if (!response.ok) {
    const error = new Error(data.error || `The server answered ${response.status}.`);
    error.fields = data.fields || {};
    error.status = response.status;
    error.busy = Boolean(data.busy);
    throw error;
  }
  return data;
}

// ------------------------------------------------------------------ incremental markdown

// Renders a growing text: finished blocks (up to a blank line outside a code fence)
// are parsed once and appended; only the tail is re-parsed, at most once a frame.
// A tail longer than LONG_TAIL with no blank line (a long paragraph) is cut too, so
// that each frame parses and lays out a short text, however long the answer.
const LONG_TAIL = 4000; // characters

// Where a long unfinished block may be cut so that its pieces read as it would: after
// its last line end or sentence end (a letter, then . ! or ? and a space before a
// capital letter; or a CJK full stop) with no code span, emphasis, link or parenthesis
// left open before it. Not in a table: its rows need their header. 0: nowhere.
const ENDS = /\n|(?<=\p{L}[.!?])[ \t]+(?=\p{Lu})|(?<=[。！？])/gu;
export function cutPoint(rest) {
  if (rest.includes("|")) return 0;
  let cut = 0, from = 0, ticks = 0, stars = 0, doubles = 0, brackets = 0, parens = 0;
  const count = (text, re) => text.match(re)?.length ?? 0;
  for (const end of rest.matchAll(ENDS)) {
    const at = end.index + end[0].length;
    if (at >= rest.length) break;
    const piece = rest.slice(from, at).replace(/^[ \t]*[*+-][ \t]/gm, ""); // not list bullets
    ticks += count(piece, /`/g);
    const pairs = count(piece, /\*\*/g);
    doubles += pairs;
    stars += count(piece, /\*/g) - 2 * pairs;
    brackets += count(piece, /\[/g) - count(piece, /\]/g);
    parens += count(piece, /\(/g) - count(piece, /\)/g);
    from = at;
    if (ticks % 2 === 0 && stars % 2 === 0 && doubles % 2 === 0 && brackets === 0 && parens === 0) cut = at;
  }
  return cut;
}

export class MarkdownView {
  constructor(container) {
    this.done = document.createElement("div");
    this.tail = document.createElement("div");
    container.replaceChildren(this.done, this.tail);
    this.reset("");
  }
  reset(text) {
    this.text = text; this.stable = 0; this.scanned = 0; this.inFence = false; this.cut = false;
    this.done.replaceChildren(); this.tail.replaceChildren();
  }
  append(text) { this.text += text; }
  advance() {
    let boundary = this.stable;
    let lineStart = this.scanned;
    for (let nl = this.text.indexOf("\n", lineStart); nl !== -1; nl = this.text.indexOf("\n", lineStart)) {
      const line = this.text.slice(lineStart, nl).trim();
      if (line.startsWith("```") || line.startsWith("~~~")) this.inFence = !this.inFence;
      else if (line === "" && !this.inFence) boundary = nl + 1;
      lineStart = nl + 1;
    }
    this.scanned = lineStart;
    // A long block is cut too; render(true) parses it whole again.
    const rest = this.text.slice(boundary);
    const cut = !this.inFence && rest.length > LONG_TAIL ? cutPoint(rest) : 0;
    if (boundary + cut > this.stable) {
      const block = document.createElement("div");
      block.innerHTML = renderMarkdown(this.text.slice(this.stable, boundary + cut));
      this.flush(block, cut > 0);
      this.done.append(block);
      this.stable = boundary + cut;
      this.cut = cut > 0;
    }
  }
  // The pieces of a cut paragraph sit flush, as the lines of one paragraph would.
  flush(el, cutAfter = false) {
    if (this.cut && el.firstElementChild) el.firstElementChild.style.marginTop = "0";
    if (cutAfter && el.lastElementChild) el.lastElementChild.style.marginBottom = "0";
  }
  render(final = false) {
    if (final) {
      this.done.innerHTML = renderMarkdown(this.text);
      this.tail.replaceChildren();
      this.stable = this.scanned = this.text.length;
      this.cut = false;
      return;
    }
    this.advance();
    const tail = this.text.slice(this.stable);
    if (this.inFence && tail.length > 20000) this.tail.textContent = tail; // cheap for huge code
    else { this.tail.innerHTML = renderMarkdown(tail); this.flush(this.tail); }
  }
}

const dirtyViews = new Set();
let frameRequested = false;
export function scheduleRender(view) {
  dirtyViews.add(view);
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    for (const v of dirtyViews) v.render();
    dirtyViews.clear();
  });
}

// ------------------------------------------------------------------ tool calls

export function assembleToolCalls(fragments) {
  const calls = new Map();
  for (const f of fragments) {
    const call = calls.get(f.index ?? 0) || { function: { name: "", arguments: "" } };
    if (f.function?.name) call.function.name += f.function.name;
    if (f.function?.arguments) call.function.arguments += f.function.arguments;
    calls.set(f.index ?? 0, call);
  }
  return [...calls.values()];
}
