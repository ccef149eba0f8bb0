// Staying in the conversation when the connection dies: the page's copy of `bridge run`'s policy
// (bridge/call/supervisor.py, bridge/call/replay.py; docs/resilience.md). Pure pieces only: the backoff,
// which answers are worth retrying, the replay summary, and the liveness rule for inbound audio.

export const RECONNECT_FOR_MS = 300_000; // like --reconnect-for: then a clear failure
export const FIRST_DELAY_MS = 250;
export const MAX_DELAY_MS = 8000;
export const SILENT_AFTER_MS = 2500; // no inbound RTP this long while live: the connection is dead
export const REPLAY_TURNS = 40;
export const REPLAY_CHARS = 8000;
export const REPLAY_ID = "replay_0"; // client item ids are kept by the server (PROTOCOL.md 4.1)
export const SUMMARY_HEAD = "The connection to this conversation was lost and restored in a new session. What was said before, "
  + "oldest first (continue from there; do not greet the user again or repeat yourself):";
export const ASK_FOR_AUDIO = { type: "session.update", session: { type: "realtime", output_modalities: ["audio"] } };

/** The wait after failed attempt `attempt` (1, 2, …): 0.25 s doubling to 8 s, drawn from its upper half. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (attempt - 1));
  return ceiling / 2 + random() * (ceiling / 2);
}

const FATAL_CODES = new Set(["access_token_required", "insufficient_quota", "invalid_api_key", "kiosk_revoked",
  "origin_not_allowed", "invalid_offer", "sdp_required", "request_too_large"]);

/**
 * Is a failed attempt worth another try? `detail` is a ConnectError's {status, code} (or a string for a
 * network error). Unreachable, 5xx and 429 (but not insufficient_quota) are retried; 401, 403, other 4xx
 * and a lost quota are not.
 */
export function retryable(detail) {
  if (!detail || typeof detail !== "object") return true; // no HTTP answer: unreachable, ICE, a timeout
  const { status, code } = detail;
  if (code && FATAL_CODES.has(code)) return false;
  if (status === undefined || status === null) return true;
  if (status === 429 || status >= 500) return true;
  return !(status >= 400 && status < 500);
}

/** The conversation in words, oldest first, from the page's Transcript (replay.py's history). */
export function historyOf(items) {
  const turns = [];
  for (const item of items) {
    if (item.deleted || item.replay) continue;
    const text = (item.text || "").trim();
    if (item.type === "message" && (item.role === "user" || item.role === "assistant") && text) {
      turns.push({ role: item.role, text, interrupted: item.role === "assistant" && item.truncatedMs != null });
    } else if (item.type === "function_call" && item.to) {
      turns.push({ role: "note", text: `handoff to ${item.to}` });
    } else if (item.type === "function_call_output" && item.output) {
      turns.push({ role: "tool", text: item.output });
    }
  }
  return turns;
}

const LABELS = { user: "User", assistant: "Assistant", tool: "Tool", note: "Note" };

/** The newest turns within the budget (at most `turns` turns, `chars` characters), oldest first. */
export function within(history, turns = REPLAY_TURNS, chars = REPLAY_CHARS) {
  const picked = [];
  let used = 0;
  for (let i = history.length - 1; i >= 0; i--) {
    const turn = history[i];
    if (picked.length >= turns || used + turn.text.length > chars) break;
    picked.push(turn);
    used += turn.text.length;
  }
  return picked.reverse();
}

/**
 * The client events that tell a new session what was said: ONE system message holding the role-labelled
 * transcript (replay.py's default "summary": no assistant text items, which may trap the model in
 * text-only replies), then the ask for audio. Empty when nothing was said.
 */
export function replayEvents(history, turns = REPLAY_TURNS, chars = REPLAY_CHARS) {
  const picked = within(history, turns, chars);
  if (!picked.length) return [];
  const line = (t) => (t.interrupted
    ? `Assistant (interrupted; the user heard part of it): ${t.text}`
    : `${LABELS[t.role]}: ${t.text}`);
  const text = [SUMMARY_HEAD, ...picked.map(line)].join("\n");
  return [
    {
      type: "conversation.item.create",
      item: { id: REPLAY_ID, type: "message", role: "system", content: [{ type: "input_text", text }] },
    },
    ASK_FOR_AUDIO,
  ];
}

/**
 * Liveness from inbound audio: feed it packetsReceived samples (getStats inbound-rtp) with their time;
 * `dead(now)` is true once the count has not moved for `silentMs`. The server streams audio continuously,
 * silence included (PROTOCOL.md 2.3), so a stalled count means a dead connection.
 */
export class InboundWatch {
  constructor(silentMs = SILENT_AFTER_MS) {
    this.silentMs = silentMs;
    this.packets = null;
    this.since = null;
  }

  /** One sample; returns true when the connection is judged dead. */
  sample(packets, now) {
    if (this.since === null || packets !== this.packets) {
      this.packets = packets;
      this.since = now;
      return false;
    }
    return now - this.since >= this.silentMs;
  }
}
