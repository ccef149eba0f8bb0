// The live event log: direction, time (ms since connect), type, expandable JSON.
// Delta floods collapse into one row per item; audio payloads are elided; everything is bounded.

const MAX_ENTRIES = 10000; // kept for Save
const MAX_ROWS = 1500; // kept in the DOM
const AUDIO_FIELDS = { "input_audio_buffer.append": "audio", "response.output_audio.delta": "delta" };

/** A copy of `event` with audio payloads replaced by their size (never keep or show audio). */
export function elide(event) {
  const field = AUDIO_FIELDS[event?.type];
  if (!field || typeof event[field] !== "string") return event;
  return { ...event, [field]: `<${event[field].length} base64 chars>` };
}

/** Colour class for a row: session, transport, audio, conversation, response, handoff, error, other. */
export function category(direction, type, event = null) {
  if (type === "error" || type.endsWith(".failed")) return "error";
  if (type === "response.function_call_arguments.done" && String(event?.name).startsWith("transfer_to_")) {
    return "handoff"; // a server-side agent handing the user over (docs/agents.md)
  }
  if (direction === "local" || type.startsWith("transport.")) return "transport";
  const head = type.split(".")[0];
  if (head === "session") return "session";
  if (head === "input_audio_buffer" || head === "output_audio_buffer") return "audio";
  if (head === "conversation") return "conversation";
  if (head === "response") return "response";
  return "other";
}

const ARROWS = { client: "↑", server: "↓", local: "•" };
const DIR_LABEL = { client: "sent", server: "received", local: "local" };

export class EventLog {
  constructor(list, { now = () => performance.now() } = {}) {
    this.list = list;
    this.now = now;
    this.t0 = now();
    this.entries = [];
    this.dropped = 0;
    this.filter = "";
    this.last = null; // the last row, for collapsing deltas
  }

  /** Start the ms clock again (on connect). */
  restart() {
    this.t0 = this.now();
    this.last = null;
  }

  add(direction, event) {
    const type = String(event?.type ?? "(no type)");
    const ms = Math.round(this.now() - this.t0);
    const shown = elide(event);
    const key = type.endsWith(".delta") ? `${direction}|${type}|${event.item_id ?? ""}` : null;
    if (key && this.last?.key === key) {
      this._grow(this.last, shown, ms);
      return;
    }
    const entry = { ms, time: new Date().toISOString(), direction, type, event: shown, count: 1, key };
    entry.text = typeof event?.delta === "string" && !AUDIO_FIELDS[type] ? event.delta : "";
    this.entries.push(entry);
    if (this.entries.length > MAX_ENTRIES) {
      this.entries.shift();
      this.dropped += 1;
    }
    this.last = entry;
    this._render(entry);
  }

  _grow(entry, event, ms) {
    entry.count += 1;
    entry.lastMs = ms;
    entry.lastEvent = event;
    if (typeof event.delta === "string" && !AUDIO_FIELDS[entry.type]) entry.text += event.delta;
    entry.row.querySelector(".count").textContent = `×${entry.count}`;
    entry.row.querySelector(".preview").textContent = preview(entry.text);
    if (entry.row.querySelector("details").open) fillBody(entry);
  }

  _render(entry) {
    const stick = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 8;
    const li = document.createElement("li");
    li.className = `ev cat-${category(entry.direction, entry.type, entry.event)} dir-${entry.direction}`;
    li.dataset.type = entry.type;
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.append(
      span("t", `${entry.ms} ms`),
      span("dir", ARROWS[entry.direction] || "?", DIR_LABEL[entry.direction]),
      span("type", entry.type),
      span("count", ""),
      span("preview", preview(entry.text || summaryHint(entry.event))),
    );
    details.append(summary);
    details.addEventListener("toggle", () => { if (details.open) fillBody(entry); });
    li.append(details);
    entry.row = li;
    li.hidden = !this._matches(entry);
    this.list.append(li);
    while (this.list.childElementCount > MAX_ROWS) this.list.firstElementChild.remove();
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    for (const entry of this.entries) if (entry.row) entry.row.hidden = !this._matches(entry);
  }

  _matches(entry) {
    if (!this.filter) return true;
    const hay = `${entry.type} ${entry.direction}`.toLowerCase();
    return this.filter.split(/\s+/).some((term) => hay.includes(term));
  }

  clear() {
    this.entries = [];
    this.last = null;
    this.list.replaceChildren();
  }

  /** The log as JSON Lines (one entry per line), for Save. */
  toJsonl() {
    return this.entries
      .map((e) => JSON.stringify({
        ms: e.ms, time: e.time, direction: e.direction, type: e.type, count: e.count,
        ...(e.count > 1 ? { last_ms: e.lastMs, text: e.text } : {}), event: e.event,
      }))
      .join("\n") + (this.entries.length ? "\n" : "");
  }
}

function fillBody(entry) {
  const details = entry.row.querySelector("details");
  let pre = details.querySelector("pre");
  if (!pre) {
    pre = document.createElement("pre");
    details.append(pre);
  }
  const body = entry.count > 1
    ? { first: entry.event, last: entry.lastEvent, count: entry.count, text: entry.text }
    : entry.event;
  pre.textContent = JSON.stringify(body, null, 2);
}

function summaryHint(event) {
  if (event?.type === "error") return event.error?.message || "";
  if (typeof event?.transcript === "string") return event.transcript;
  if (typeof event?.detail === "string" && event.detail) return event.detail;
  if (typeof event?.state === "string") return event.state;
  return "";
}

function preview(text) {
  const t = String(text || "").replace(/\s+/g, " ").trim();
  return t.length > 80 ? `${t.slice(0, 79)}…` : t;
}

function span(cls, text, label) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  if (label) {
    s.title = label;
    s.setAttribute("aria-label", label);
  }
  return s;
}
