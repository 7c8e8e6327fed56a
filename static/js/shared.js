// A shared conversation's page (/s/<token>/): the transcript, read-only, rendered with the
// playground's own sanitised Markdown (common.js messageView), and its live runs. It reads
// the transcript again from transcript.json while a run is going (and now and then otherwise),
// so a run that ends shows its answer. The JSON holds only the shared fields (views/shares.py).
import { messageView } from "./common.js";

const config = JSON.parse(document.getElementById("shared-config").textContent);
const $ = (id) => document.getElementById(id);
const BUSY_MS = 3000;
const IDLE_MS = 15000;
let last = "";

function renderMessage(message) {
  return messageView(message).el;
}

function renderRun(run) {
  const el = document.createElement("article");
  el.className = "message assistant running";
  const who = document.createElement("header");
  who.textContent = `assistant · ${run.model}${run.user ? ` · started by ${run.user}` : ""}`;
  const body = document.createElement("p");
  body.className = "body muted";
  body.textContent = run.status === "queued" ? "Waiting to start…" : "Answering… the answer shows here when it ends.";
  el.append(who, body);
  return el;
}

function render(data) {
  const text = JSON.stringify(data);
  if (text === last) return;
  last = text;
  $("shared-title").textContent = data.title;
  document.title = `${data.title} · shared · Relay Playground`;
  $("transcript").replaceChildren(...data.messages.map(renderMessage), ...data.runs.map(renderRun));
  $("shared-status").textContent = data.runs.length ? `${data.runs.length} run${data.runs.length > 1 ? "s" : ""} going` : "up to date";
}

async function refresh() {
  let busy = false;
  try {
    const response = await fetch(config.transcript, { credentials: "same-origin", cache: "no-store" });
    const data = await response.json();
    if (!response.ok) {
      $("shared-error").textContent = data.error || `The link no longer opens (${response.status}).`;
      $("shared-error").hidden = false;
      $("transcript").replaceChildren();
      return; // a revoked, expired or deleted link stays closed
    }
    $("shared-error").hidden = true;
    render(data);
    busy = data.runs.length > 0;
  } catch {
    busy = true; // offline for a moment: try again soon
  }
  setTimeout(refresh, busy ? BUSY_MS : IDLE_MS);
}

const initial = JSON.parse($("shared-transcript").textContent);
render(initial);
setTimeout(refresh, initial.runs.length ? BUSY_MS : IDLE_MS);
