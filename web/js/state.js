// Small pure pieces of page state: connection-state labels, the per-turn latency meter, and
// error events in plain words.

export const STATE_LABELS = {
  idle: "Disconnected",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
  failed: "Connection failed",
};

const FIRST_OUTPUT = new Set([
  "output_audio_buffer.started",
  "response.output_audio_transcript.delta",
  "response.output_text.delta",
  "response.output_audio.delta",
  "response.function_call_arguments.delta",
]);

/**
 * Response latency per turn: from the end of the user's turn (the server's speech_stopped, or our
 * response.create for a typed message) to the first sign of the reply.
 */
export class LatencyMeter {
  constructor(now = () => performance.now()) {
    this.now = now;
    this.start = null;
    this.samples = [];
  }

  reset() {
    this.start = null;
  }

  /** Feed every event; returns the turn's latency in ms when this event completes one. */
  observe(direction, event) {
    const type = event?.type;
    if ((direction === "client" && type === "response.create")
      || (direction === "server" && type === "input_audio_buffer.speech_stopped")) {
      this.start = this.now();
      return null;
    }
    if (direction === "server" && this.start !== null && FIRST_OUTPUT.has(type)) {
      const ms = Math.round(this.now() - this.start);
      this.start = null;
      this.samples.push(ms);
      if (this.samples.length > 200) this.samples.shift();
      return ms;
    }
    return null;
  }

  median() {
    if (!this.samples.length) return null;
    const s = [...this.samples].sort((a, b) => a - b);
    const mid = s.length >> 1;
    return s.length % 2 ? s[mid] : Math.round((s[mid - 1] + s[mid]) / 2);
  }

  describe() {
    if (!this.samples.length) return "Response latency: —";
    const last = this.samples[this.samples.length - 1];
    return `Response latency: ${last} ms (median ${this.median()} ms over ${this.samples.length} turns)`;
  }
}

const CODE_WORDS = {
  invalid_api_key: "The key was refused by the Realtime API.",
  session_expired: "The session reached its time limit. Connect again to continue.",
  conversation_already_has_active_response: "The assistant is still answering; wait for it to finish.",
  input_audio_buffer_commit_empty: "Not enough audio was heard to make a turn.",
  rate_limit_exceeded: "The Realtime API is rate limiting this account. Try again shortly.",
  insufficient_quota: "The account behind this server has run out of credit.",
};

/** A server `error` event in plain words (the API's own message when we have nothing better). */
export function errorWords(event) {
  const err = event?.error || {};
  const known = CODE_WORDS[err.code];
  if (known) return known;
  const message = err.message || "The Realtime API reported an error.";
  return err.type === "server_error" ? `The Realtime API failed: ${message}` : message;
}
