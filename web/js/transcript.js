// The conversation as the server tells it: items in conversation order (by previous_item_id),
// user/assistant text from transcripts, function calls by name, interrupted turns marked where cut.
// With server-side agents, `transfer_to_<name>` calls are handoffs: shown as "handoff → name", and
// they give the current agent (docs/agents.md "Handoffs").

export const HANDOFF_PREFIX = "transfer_to_";
export const REPLAY_PREFIX = "replay_"; // our replay after a reconnect (resilience.js): not a turn

/** The target of a handoff call, or null for an ordinary function call. */
export function handoffTarget(name) {
  return typeof name === "string" && name.startsWith(HANDOFF_PREFIX) ? name.slice(HANDOFF_PREFIX.length) : null;
}

function reasonOf(args) {
  try {
    const reason = JSON.parse(args || "{}")?.reason;
    return typeof reason === "string" ? reason : "";
  } catch {
    return "";
  }
}

const TEXT_KEYS = { input_text: "text", input_audio: "transcript", output_text: "text", output_audio: "transcript", text: "text", audio: "transcript" };

function contentText(item) {
  const parts = Array.isArray(item?.content) ? item.content : [];
  return parts.map((p) => (typeof p?.[TEXT_KEYS[p?.type]] === "string" ? p[TEXT_KEYS[p.type]] : "")).join("");
}

export class Transcript {
  constructor() {
    this.items = new Map();
    this.order = [];
    this.agent = null; // the current agent (null: no server-side agents)
    this.agents = null;
  }

  /** `agents`: {start, names} from /api/config, or null. */
  clear(agents = this.agents) {
    this.items.clear();
    this.order = [];
    this.agents = agents || null;
    this.agent = this.agents?.start ?? null;
  }

  /** A line of our own between turns, e.g. "reconnected in 412 ms" (type "reconnect"). */
  mark(type, text) {
    const id = `${type}_${this.order.length}_${Date.now()}`;
    this.items.set(id, { id, type, role: null, status: null, text, previous: null });
    this.order.push(id);
  }

  /** A function call item's name is known: a transfer_to_<name> call switches the current agent. */
  _sawCall(item) {
    const target = handoffTarget(item.name);
    if (!target || item.handoffSeen) return;
    item.handoffSeen = true;
    item.from = this.agent;
    item.to = target;
    item.reason = reasonOf(item.arguments);
    this.agent = target;
  }

  /** Apply one server event; true when the transcript changed. */
  apply(event) {
    const t = event?.type;
    switch (t) {
      case "conversation.item.added":
      case "conversation.item.done":
      case "conversation.item.created":
      case "conversation.item.retrieved":
        return this._upsert(event.item, event.previous_item_id);
      case "conversation.item.input_audio_transcription.delta":
        return this._appendText(event.item_id, event.delta, "user");
      case "conversation.item.input_audio_transcription.completed":
        return this._setText(event.item_id, event.transcript, "user");
      case "conversation.item.input_audio_transcription.failed":
        return this._patch(event.item_id, { failed: event.error?.message || "transcription failed" }, "user");
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        return this._appendText(event.item_id, event.delta, "assistant");
      case "response.output_audio_transcript.done":
        return this._setText(event.item_id, event.transcript, "assistant");
      case "response.output_text.done":
        return this._setText(event.item_id, event.text, "assistant");
      case "response.function_call_arguments.done": {
        this._patch(event.item_id, { type: "function_call", name: event.name, arguments: event.arguments });
        this._sawCall(this.items.get(event.item_id));
        return true;
      }
      case "conversation.item.truncated":
        return this._patch(event.item_id, { truncatedMs: event.audio_end_ms });
      case "conversation.item.deleted":
        return this._patch(event.item_id, { deleted: true });
      default:
        return false;
    }
  }

  _ensure(id, role) {
    let item = this.items.get(id);
    if (!item) {
      item = { id, type: "message", role: role || null, status: null, text: "", previous: null };
      this.items.set(id, item);
      this.order.push(id);
    }
    return item;
  }

  _upsert(raw, previous) {
    if (!raw?.id || raw.id.startsWith(REPLAY_PREFIX)) return false;
    const known = this.items.has(raw.id);
    const item = this._ensure(raw.id, raw.role);
    if (!known) {
      if (raw.type === "message" && raw.role === "assistant") item.agent = this.agent;
      this.order.pop();
      const at = previous ? this.order.indexOf(previous) : -1;
      if (at >= 0) this.order.splice(at + 1, 0, raw.id);
      else this.order.push(raw.id);
      item.previous = previous ?? null;
    }
    item.type = raw.type || item.type;
    item.role = raw.role || item.role;
    item.status = raw.status || item.status;
    if (raw.name) item.name = raw.name;
    if (typeof raw.arguments === "string" && raw.arguments) item.arguments = raw.arguments;
    if (raw.call_id) item.call_id = raw.call_id;
    if (typeof raw.output === "string") item.output = raw.output;
    const text = contentText(raw);
    if (text && text.length >= item.text.length) item.text = text;
    if (item.type === "function_call" && item.name && typeof item.arguments === "string") this._sawCall(item);
    return true;
  }

  _appendText(id, delta, role) {
    if (!id || typeof delta !== "string") return false;
    const item = this._ensure(id, role);
    item.text += delta;
    return true;
  }

  _setText(id, text, role) {
    if (!id || typeof text !== "string") return false;
    const item = this._ensure(id, role);
    if (text || !item.truncatedMs) item.text = text || item.text;
    return true;
  }

  _patch(id, fields, role) {
    if (!id) return false;
    Object.assign(this._ensure(id, role), fields);
    return true;
  }

  /** Items in conversation order. */
  list() {
    return this.order.map((id) => this.items.get(id));
  }

  /** JSON Lines, one item per line, for Download. */
  toJsonl() {
    return this.list().map((i) => JSON.stringify({
      id: i.id, previous_item_id: i.previous, type: i.type, role: i.role, status: i.status,
      text: i.text || null, name: i.name ?? null, arguments: i.arguments ?? null, output: i.output ?? null,
      truncated_at_ms: i.truncatedMs ?? null, deleted: Boolean(i.deleted),
      ...(this.agents ? { agent: i.agent ?? null, handoff_to: i.to ?? null } : {}),
    })).join("\n") + (this.order.length ? "\n" : "");
  }
}

/** Render the transcript into an <ol> (cheap enough to redo on each change). */
export function renderTranscript(list, transcript) {
  const rows = transcript.list().map((item) => {
    const li = document.createElement("li");
    const kind = item.type === "message" ? item.role || "message" : item.type;
    li.className = `turn turn-${kind}`;
    const head = document.createElement("div");
    head.className = "turn-head";
    const handoff = item.type === "function_call" && item.to;
    if (handoff) li.classList.add("turn-handoff");
    const who = document.createElement("strong");
    who.textContent = handoff
      ? "Handoff"
      : { user: "You", assistant: "Assistant", system: "System", reconnect: "Connection", renewal: "Connection" }[kind] || kind.replace(/_/g, " ");
    if (item.agent) who.textContent += ` · ${item.agent}`;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = [handoff && item.from ? `from ${item.from}` : null, item.id.slice(-8), item.status]
      .filter(Boolean).join(" · ");
    meta.title = item.id;
    head.append(who, meta);
    if (item.truncatedMs != null) head.append(badge("truncated", `truncated @${item.truncatedMs} ms`));
    if (item.deleted) head.append(badge("deleted", "deleted"));
    const body = document.createElement("p");
    body.className = "turn-text";
    if (handoff) body.textContent = `handoff → ${item.to}${item.reason ? ` — ${item.reason}` : ""}`;
    else if (item.type === "function_call") body.textContent = `ƒ ${item.name || "?"}(${readable(item.arguments)})`;
    else if (item.type === "function_call_output") body.textContent = `→ ${readable(item.output)}`;
    else body.textContent = item.text || (item.failed ? `(${item.failed})` : "…");
    li.append(head, body);
    return li;
  });
  list.replaceChildren(...rows);
}

/** JSON text re-serialised, so escaped non-ASCII ("\ubd88") reads as written; anything else as is. */
function readable(json) {
  if (!json) return "";
  try {
    return JSON.stringify(JSON.parse(json));
  } catch {
    return json;
  }
}

function badge(cls, text) {
  const b = document.createElement("span");
  b.className = `badge badge-${cls}`;
  b.textContent = text;
  return b;
}
