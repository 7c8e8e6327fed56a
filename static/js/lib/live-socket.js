// The one websocket connection of the browser, under both of the server's sockets: a
// conversation's (lib/conversation-socket.js) and the workspace's (WorkspaceSocket below;
// playground/consumers.py is the server's side). It reconnects with backoff and acts on the
// close codes: 4401 logged out and 4403 access removed (no reconnect), 4409 role changed
// (reconnect, `roleChanged` set), anything else (4008 too far behind, 4400 a refused frame,
// a dropped connection) reconnects.
export const CLOSE = { LOGGED_OUT: 4401, FORBIDDEN: 4403, BAD_FRAME: 4400, ROLE_CHANGED: 4409, BEHIND: 4008 };
const BACKOFF_MS = 250;
const BACKOFF_MAX_MS = 10000;

/** The websocket URL of a server path (same host and scheme as the page). */
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${path}`;
}

/**
 * A websocket on `path`, reconnecting until closed. `onMessage(event)` gets each decoded
 * event; `onState(state)` is told "connecting", "live", "reconnecting", "stopped" (closed,
 * `shouldReconnect()` said no), "logged-out" or "forbidden".
 */
export class LiveSocket {
  constructor(path, { onMessage, onState = () => {}, shouldReconnect = () => true }) {
    this.path = path;
    this.onMessage = onMessage;
    this.onState = onState;
    this.shouldReconnect = shouldReconnect;
    this.roleChanged = false;
    this.retry = 0;
    this.closed = false;
    this.socket = null;
    this.timer = null;
    this.open();
  }

  open() {
    this.timer = null;
    if (this.closed) return;
    const socket = new WebSocket(socketUrl(this.path));
    this.socket = socket;
    this.onState("connecting");
    socket.onopen = () => {
      this.retry = 0;
      this.onState("live");
    };
    socket.onmessage = (e) => this.onMessage(JSON.parse(e.data));
    socket.onclose = (e) => { if (this.socket === socket) this.closedBy(e.code); };
  }

  /** Stop for good: no reconnect, no more events. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.onmessage = null;
      this.socket.close();
      this.socket = null;
    }
  }

  closedBy(code) {
    this.socket = null;
    if (code === CLOSE.LOGGED_OUT || code === CLOSE.FORBIDDEN) {
      this.close();
      this.onState(code === CLOSE.LOGGED_OUT ? "logged-out" : "forbidden");
      return;
    }
    if (code === CLOSE.ROLE_CHANGED) this.roleChanged = true;
    if (code === CLOSE.BAD_FRAME) console.warn("The server refused a websocket frame (4400); reconnecting.");
    if (!this.shouldReconnect()) {
      this.close();
      this.onState("stopped");
      return;
    }
    this.onState("reconnecting");
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MS * 2 ** this.retry++);
    this.timer = setTimeout(() => {
      if (this.closed) return;
      if (this.shouldReconnect()) { this.open(); return; }
      this.close();
      this.onState("stopped");
    }, delay);
  }
}

/**
 * The workspace's socket: `onListed(event)` for each `conversation.listed` (something the
 * conversation list shows changed: `action`, `conversation`, `by`), `onRunning(ids)` with the
 * conversations that have a run in progress, on connect and whenever that changes.
 */
export class WorkspaceSocket {
  constructor(workspaceId, { onListed = () => {}, onRunning = () => {}, onState = () => {} }) {
    this.running = new Set();
    this.onListed = onListed;
    this.onRunning = onRunning;
    this.live = new LiveSocket(`/ws/workspaces/${encodeURIComponent(workspaceId)}/`, {
      onMessage: (event) => this.dispatch(event),
      onState: (state) => onState(state, this),
    });
  }

  get roleChanged() { return Boolean(this.live?.roleChanged); }

  dispatch(event) {
    if (event.type === "workspace.sync") {
      this.running = new Set(event.running);
      this.onRunning(this.running);
      // What changed while the socket was away: the page reads its list again.
      this.onListed({ type: "conversation.listed", action: "sync", conversation: null, by: null });
      return;
    }
    if (event.type !== "conversation.listed") return;
    const before = this.running.size;
    if (event.action === "run.started") this.running.add(event.conversation);
    if (event.action === "run.done" || event.action === "deleted") this.running.delete(event.conversation);
    if (event.action === "run.started" || this.running.size !== before) this.onRunning(this.running);
    this.onListed(event);
  }

  close() { this.live.close(); }
}
