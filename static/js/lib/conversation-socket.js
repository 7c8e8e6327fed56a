// The conversation websocket, as both pages use it (playground/consumers.py is the server's
// side). The server sends `sync` (the runs in progress), a `snapshot` of each, then live
// events; every run's events carry `seq`, and each run ends with `run.done`.
//
// This module owns the rules of that stream, so a page sees each change once and in order:
// - repeats are dropped: a `run.delta` whose seq the page has already shown;
// - a snapshot older than what the page shows is ignored;
// - `run.done` wins: once a run is final, no later delta or snapshot changes it;
// - `run.done` carries the answer's text once, in its run's choices: its messages come
//   without content, reasoning and tool_calls, and are handed on with them put back
//   (`answerMessages`; the server's side is playground/relay/events.py);
// - a lost connection reconnects with backoff, and the server's fresh snapshot resyncs it;
// - the close codes: 4401 logged out and 4403 access removed (no reconnect), 4409 role
//   changed (reconnect, and the page asks for a reload), 4008 too far behind and 4400 a
//   refused frame (reconnect, resync from the snapshot);
// - an active run with no event for QUIET_MS: the page is asked to read its stored state.
// The connection itself (reconnecting, close codes) is lib/live-socket.js's.
import { CLOSE, LiveSocket } from "./live-socket.js";

export { CLOSE };
export const ACTIVE = new Set(["queued", "streaming"]);
const QUIET_MS = 10000;
const QUIET_CHECK_MS = 2500;

/** What a page shows of each run of one conversation: its seq, and whether it is final. */
export class RunLedger {
  constructor() { this.runs = new Map(); }

  /** A run's full state as the page now shows it (a stored read, a submit's answer, a snapshot). */
  loaded(run) {
    const known = this.runs.get(run.id);
    this.runs.set(run.id, {
      seq: run.seq ?? known?.seq ?? 0,
      final: Boolean(known?.final) || !ACTIVE.has(run.status),
    });
  }

  /** A run the page no longer shows (hidden, or gone from the conversation). */
  forget(runId) { this.runs.delete(runId); }

  /** Whether a stored read of `run` is older than what the page shows: an end already shown wins. */
  outdated(run) { return this.isFinal(run.id) && ACTIVE.has(run.status); }

  seq(runId) { return this.runs.get(runId)?.seq ?? 0; }
  isFinal(runId) { return Boolean(this.runs.get(runId)?.final); }

  /** Runs the page shows as in progress. */
  active() { return [...this.runs].filter(([, r]) => !r.final).map(([id]) => id); }

  /** Whether `event` changes what the page shows: false for a repeat or a stale state. */
  accepts(event) {
    switch (event.type) {
      case "snapshot": {
        const known = this.runs.get(event.run.id);
        if (!known) return true;
        if (known.final) return !ACTIVE.has(event.run.status) && event.run.seq > known.seq;
        return event.run.seq >= known.seq;
      }
      case "run.delta": {
        const known = this.runs.get(event.run);
        return !known?.final && event.seq > (known?.seq ?? 0);
      }
      case "run.done": {
        const known = this.runs.get(event.run.id);
        return !(known?.final && known.seq >= (event.seq ?? event.run.seq));
      }
      default:
        return true;
    }
  }

  /** Note an event the page has applied. */
  record(event) {
    switch (event.type) {
      case "snapshot":
        this.loaded(event.run);
        break;
      case "run.started":
        if (!this.runs.has(event.run.id)) this.loaded(event.run);
        break;
      case "run.delta":
        this.runs.set(event.run, { seq: event.seq, final: false });
        break;
      case "run.done": {
        const seq = Math.max(event.seq ?? event.run.seq, this.seq(event.run.id));
        this.runs.set(event.run.id, { seq, final: true });
        break;
      }
      default:
    }
  }
}

/**
 * A `run.done`'s answer messages in full: each gets the content, reasoning and tool calls of
 * the run's choice whose index is its `choice_index` (tool calls only when it has some).
 */
export function answerMessages(event) {
  const choices = new Map((event.run.choices || []).map((c) => [c.index, c]));
  return (event.messages || []).map((m) => {
    const choice = choices.get(m.choice_index) || {};
    const full = { ...m, content: choice.content || "", reasoning: choice.reasoning || "" };
    if (choice.tool_calls && choice.tool_calls.length) full.tool_calls = choice.tool_calls;
    return full;
  });
}

/**
 * One conversation's websocket, reconnecting until closed.
 *
 * `onEvent(event)` gets each event the ledger accepts (a `sync` also lists as `stale` the
 * runs the page shows as in progress that the server no longer has); returning false says
 * the page did not apply it, so it is not recorded. `onState(state, socket)` is told
 * "connecting", "live", "reconnecting", "stopped" (closed, `shouldReconnect()` said no),
 * "logged-out" or "forbidden"; `socket.roleChanged` is set once a 4409 came.
 * `onQuiet()` is called when a run is in progress and no event came for QUIET_MS.
 */
export class ConversationSocket {
  constructor(conversationId, { ledger = new RunLedger(), onEvent, onState = () => {}, onQuiet = () => {}, shouldReconnect = () => true }) {
    this.conversationId = conversationId;
    this.ledger = ledger;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onQuiet = onQuiet;
    this.touch();
    this.quietTimer = setInterval(() => this.checkQuiet(), QUIET_CHECK_MS);
    this.live = new LiveSocket(`/ws/conversations/${encodeURIComponent(conversationId)}/`, {
      onMessage: (event) => this.dispatch(event),
      onState: (status) => {
        if (this.live?.closed) clearInterval(this.quietTimer); // stopped for good
        this.onState(status, this);
      },
      shouldReconnect,
    });
  }

  /** Set once a 4409 came: the user's role changed. */
  get roleChanged() { return Boolean(this.live?.roleChanged); }

  /** Counts as an event for the quiet check (a page that just submitted expects events from now). */
  touch() { this.lastEventAt = Date.now(); }

  /** Stop for good: no reconnect, no more events. */
  close() {
    clearInterval(this.quietTimer);
    this.live.close();
  }

  dispatch(event) {
    this.touch();
    if (event.type === "sync") {
      const active = new Set(event.active);
      event.stale = this.ledger.active().filter((id) => !active.has(id));
    }
    if (event.type === "run.done") event.messages = answerMessages(event);
    if (!this.ledger.accepts(event)) return;
    if (this.onEvent(event) !== false) this.ledger.record(event);
  }

  checkQuiet() {
    if (this.ledger.active().length && Date.now() - this.lastEventAt > QUIET_MS) {
      this.touch();
      this.onQuiet();
    }
  }
}
