// Staying in the conversation when the connection dies: the page's copy of `bridge run`'s policy
// (bridge/call/supervisor.py, bridge/call/replay.py; docs/resilience.md). Pure pieces only: the backoff,
// which answers are worth retrying, the replay (summary or items), the liveness rule for inbound audio,
// when to renew a session before its cap, the turn boundary, and the recovery of a text-only reply.

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
export const RENEWAL_WINDOW_MAX_MS = 300_000; // renew in the last min(5 min, 25 %) of a session's lifetime
export const RENEWAL_WINDOW_SHARE = 0.25;
export const RENEWAL_LAST_CHANCE_MS = 1000; // this close to the cap, let it expire and reconnect instead

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
 * and a lost quota are not (our server answers it as 402 insufficient_quota; the API itself as 429 with
 * that code).
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

const line = (t) => (t.interrupted
  ? `Assistant (interrupted; the user heard part of it): ${t.text}`
  : `${LABELS[t.role]}: ${t.text}`);

const create = (id, role, type, text) => ({
  type: "conversation.item.create",
  item: { id, type: "message", role, content: [{ type, text }] },
});

/** The replay shape from the page's query string: `?replay=items` (test-only, like `bridge run --replay
 * items`), else "summary". */
export function replayShape(search) {
  return new URLSearchParams(search || "").get("replay") === "items" ? "items" : "summary";
}

/**
 * The client events that tell a new session what was said, then the ask for audio; empty when nothing was
 * said. "summary" (default): ONE system message holding the role-labelled transcript (replay.py's default:
 * no assistant text items, which may trap the model in text-only replies). "items": one item per turn (user
 * `input_text`, assistant `output_text`, the rest as system notes), exposed to that trap.
 */
export function replayEvents(history, turns = REPLAY_TURNS, chars = REPLAY_CHARS, shape = "summary") {
  const picked = within(history, turns, chars);
  if (!picked.length) return [];
  if (shape === "items") {
    const items = picked.map((t, n) => {
      const id = `replay_${n}`;
      if (t.role === "user") return create(id, "user", "input_text", t.text);
      if (t.role === "assistant") return create(id, "assistant", "output_text", t.text);
      return create(id, "system", "input_text", line(t));
    });
    return [...items, ASK_FOR_AUDIO];
  }
  const text = [SUMMARY_HEAD, ...picked.map(line)].join("\n");
  return [create(REPLAY_ID, "system", "input_text", text), ASK_FOR_AUDIO];
}

/**
 * A completed response with assistant message(s) but no audio (a text-only reply): the events that delete
 * it and ask again, spoken (replay.py SpokenReplies). Empty for anything else.
 */
export function spokenAgain(event) {
  if (event?.type !== "response.done" || event.response?.status !== "completed") return [];
  const output = Array.isArray(event.response.output) ? event.response.output : [];
  const texts = output.filter((i) => i?.type === "message" && i.role === "assistant");
  const audio = (i) => (i.content || []).some((c) => c?.type === "output_audio" || c?.type === "audio");
  if (!texts.length || texts.some(audio)) return [];
  return [
    ...texts.filter((i) => i.id).map((i) => ({ type: "conversation.item.delete", item_id: i.id })),
    { type: "response.create", response: { output_modalities: ["audio"] } },
  ];
}

/**
 * When renewal may start (ms since the epoch): the last min(5 min, 25 %) of the lifetime from `nowMs`
 * (when session.created arrived) to `expiresAtS` (its `expires_at`, epoch seconds). Null without a cap.
 */
export function renewalDueAt(expiresAtS, nowMs) {
  if (typeof expiresAtS !== "number" || expiresAtS <= 0) return null;
  const expiresMs = expiresAtS * 1000;
  const window = Math.min(RENEWAL_WINDOW_MAX_MS, RENEWAL_WINDOW_SHARE * Math.max(0, expiresMs - nowMs));
  return expiresMs - window;
}

/**
 * Turn boundaries from one session's server events: nobody is talking and nothing is on its way (no
 * response being generated, no reply audio playing, no speech_started without its speech_stopped).
 */
export class TurnState {
  constructor() {
    this.responses = new Set();
    this.playing = false;
    this.hearing = false;
  }

  observe(event) {
    switch (event?.type) {
      case "response.created":
        this.responses.add(event.response?.id ?? "?");
        break;
      case "response.done":
        this.responses.delete(event.response?.id ?? "?");
        break;
      case "output_audio_buffer.started":
        this.playing = true;
        break;
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        this.playing = false;
        break;
      case "input_audio_buffer.speech_started":
        this.hearing = true;
        break;
      case "input_audio_buffer.speech_stopped":
        this.hearing = false;
        break;
      default:
    }
  }

  atBoundary() {
    return this.responses.size === 0 && !this.playing && !this.hearing;
  }
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
