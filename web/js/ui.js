// The page: wires the controls to a RealtimeSession, the event log, the transcript drawer,
// the error box and the latency readout; keeps the call going across drops (reconnect), before the
// service's session cap (renewal, make-before-break) and through text-only replies (asked again, spoken).
// Entry module (no inline script anywhere: CSP).

import { EventLog } from "./log.js";
import {
  RECONNECT_FOR_MS, RENEWAL_LAST_CHANCE_MS, REPLAY_CHARS, REPLAY_TURNS, backoffDelay, historyOf, renewalDueAt,
  replayEvents, replayShape, retryable, spokenAgain,
} from "./resilience.js";
import { ConnectError, RealtimeSession } from "./rtc.js";
import { LatencyMeter, STATE_LABELS, errorWords } from "./state.js";
import { Transcript, renderTranscript } from "./transcript.js";
import { TypedTurns } from "./turns.js";

const $ = (id) => document.getElementById(id);

const ui = {
  state: $("state"), mic: $("mic"), aec: $("aec"), token: $("token"), tokenField: $("token-field"), greeting: $("greeting"),
  connect: $("connect"), disconnect: $("disconnect"), mute: $("mute"), latency: $("latency"),
  errors: $("errors"), errorList: $("error-list"), dismiss: $("dismiss"),
  say: $("say"), text: $("text"), send: $("send"),
  log: $("log"), filter: $("filter"), saveLog: $("save-log"), clearLog: $("clear-log"),
  menu: $("menu"), drawer: $("drawer"), closeDrawer: $("close-drawer"),
  transcript: $("transcript"), saveTranscript: $("save-transcript"), remote: $("remote"), agent: $("agent"),
};

const log = new EventLog(ui.log);
const transcript = new Transcript();
const latency = new LatencyMeter();
let session = null;
let mic = null; // the microphone stream, kept across reconnects (its audio is not queued meanwhile)
let outage = null; // {since, reason, attempts, deadline, callId, sessionId} while reconnecting
let muted = false;
let renewing = null; // the standby session while a renewal is under way
const RENEWAL_POLL_MS = 100;
const REPLAY_SHAPE = replayShape(location.search); // ?replay=items: test-only, like `bridge run --replay items`
let agents = null; // {start, names} when the server runs the agents (bridge serve --agents)
const typed = new TypedTurns((event) => session?.send(event));

function setState(state, detail) {
  ui.state.dataset.state = state;
  ui.state.textContent = detail && state !== "failed" ? `${STATE_LABELS[state]} · ${detail}` : STATE_LABELS[state];
  const live = state === "live";
  const busy = state === "connecting" || state === "reconnecting" || live;
  ui.connect.disabled = busy;
  ui.disconnect.disabled = !busy;
  ui.mute.disabled = !live;
  ui.text.disabled = !live;
  ui.send.disabled = !live;
  ui.mic.disabled = busy;
  ui.aec.disabled = busy;
  ui.token.disabled = busy;
}

function showError(message) {
  const li = document.createElement("li");
  li.textContent = message;
  ui.errorList.append(li);
  while (ui.errorList.childElementCount > 5) ui.errorList.firstElementChild.remove();
  ui.errors.hidden = false;
}

function showAgent() {
  ui.agent.hidden = !transcript.agent;
  ui.agent.textContent = transcript.agent ? `Agent: ${transcript.agent}` : "";
}

function dismissErrors() {
  ui.errorList.replaceChildren();
  ui.errors.hidden = true;
}

function onEvent(direction, event) {
  log.add(direction, event);
  const ms = latency.observe(direction, event);
  if (ms !== null) ui.latency.textContent = latency.describe();
  if (direction !== "server") return;
  typed.observe(event);
  if (transcript.apply(event)) {
    renderTranscript(ui.transcript, transcript);
    showAgent();
  }
  if (event.type === "error") showError(errorWords(event));
}

function onState(state, detail) {
  log.add("local", { type: `transport.${state}`, state, detail });
  if (session === null) return;
  if (state === "live") {
    if (!mic) {
      mic = session.stream; // the page keeps the microphone from now on
      session.ownsStream = false;
    }
    if (outage) {
      resumed(outage);
      return;
    }
    watchForRenewal(session);
    setState(state, detail);
    refreshMicrophones();
    const greeting = ui.greeting.value.trim();
    if (greeting) sendText(greeting);
    return;
  }
  if (outage) return; // an attempt's progress: the header keeps saying Reconnecting…
  setState(state, detail);
  if (state === "failed") showError(detail);
  if (state === "closed" || state === "failed") ended();
}

/** The call is over (disconnected or given up): release everything. */
function ended() {
  session = null;
  outage = null;
  renewing?.close();
  renewing = null;
  ui.remote.srcObject = null;
  for (const track of mic?.getTracks() || []) track.stop();
  mic = null;
  setMute(false);
}

/** A RealtimeSession whose callbacks count only while it is the page's current session. */
function makeSession() {
  const current = new RealtimeSession({
    onEvent: (direction, event) => {
      onEvent(direction, event);
      if (direction === "server") recoverSpoken(current, event);
    },
    onState: (state, detail) => { if (session === current) onState(state, detail); },
    onTrack: (stream) => { if (session === current) ui.remote.srcObject = stream; },
    onDrop: (reason, words) => { if (session === current) dropped(current, reason, words); },
  });
  return current;
}

function newSession() {
  session = makeSession();
  return session;
}

/** A completed reply without audio (the text-only trap): delete it and ask again, spoken (replay.py). */
function recoverSpoken(current, event) {
  const events = spokenAgain(event);
  if (!events.length) return;
  log.add("local", { type: "transport.spoken_again", response_id: event.response?.id, session: current.sessionId });
  for (const e of events) current.send(e);
}

function sendReplay(current) {
  for (const event of replayEvents(historyOf(transcript.list()), REPLAY_TURNS, REPLAY_CHARS, REPLAY_SHAPE)) {
    current.send(event);
  }
}

/**
 * Renewal before the cap (docs/resilience.md "Browser page"): in the last min(5 min, 25 %) of the session's
 * lifetime, at a turn boundary, move to a new session. Too close to the cap, it lets the session expire:
 * session_expired is then handled as a drop.
 */
function watchForRenewal(current) {
  const due = renewalDueAt(current.expiresAt, current.createdAt);
  if (due === null) return;
  const tick = () => {
    if (session !== current || outage || current.closed || renewing) return;
    const now = Date.now();
    if (current.expiresAt * 1000 - now < RENEWAL_LAST_CHANCE_MS) return;
    if (now >= due && current.turns.atBoundary()) {
      renew(current);
      return;
    }
    setTimeout(tick, now < due ? due - now : RENEWAL_POLL_MS);
  };
  tick();
}

/** Still worth moving from `old`: it is current, live, and not about to expire. */
const renewable = (old) => session === old && !outage && !old.closed
  && old.expiresAt * 1000 - Date.now() >= RENEWAL_LAST_CHANCE_MS;

/**
 * Make-before-break: a new session (fresh key, or a new /api/call resuming this call's agent), told the
 * conversation; at the next boundary the microphone's track moves to it and the audio element to its
 * stream; then the old one is closed. No Reconnecting… banner; a "renewed session" line.
 */
async function renew(old) {
  const t0 = performance.now();
  const next = makeSession();
  renewing = next;
  log.add("local", { type: "transport.renewing", session: old.sessionId });
  try {
    await next.connect({
      accessToken: ui.token.value.trim(), deviceId: ui.mic.value, echoCancellation: ui.aec.checked, agents,
      stream: mic, resumeCallId: agents ? old.callId : null, standby: true,
    });
  } catch (err) {
    if (renewing === next) renewing = null;
    next.closed = true;
    next._release();
    const detail = err instanceof ConnectError ? err.message : String(err?.message || err);
    log.add("local", { type: "transport.renewal_failed", detail }); // the old one runs on until its cap
    return;
  }
  if (renewing !== next || !renewable(old)) return abandon(next);
  sendReplay(next);
  while (!old.turns.atBoundary()) { // someone started talking meanwhile: move at the next pause
    await sleep(RENEWAL_POLL_MS);
    if (renewing !== next || !renewable(old) || next.closed) return abandon(next);
  }
  renewing = null;
  session = next;
  await next.takeMicrophone();
  next.setMuted(muted);
  ui.remote.srcObject = next.remoteStream;
  await old.releaseMicrophone();
  old.close(); // not the current session any more: its "closed" reaches nobody
  typed.reset();
  const ms = Math.round(performance.now() - t0);
  transcript.mark("renewal", `renewed session (${old.sessionId} → ${next.sessionId}) in ${ms} ms`);
  renderTranscript(ui.transcript, transcript);
  log.add("local", { type: "transport.renewed", ms, from: old.sessionId, to: next.sessionId });
  setState("live", next.callId ? `Call ${next.callId}` : "");
  watchForRenewal(next);
}

function abandon(next) {
  if (renewing === next) renewing = null;
  next.close();
  log.add("local", { type: "transport.renewal_abandoned", session: next.sessionId });
}

function openSession(current, resumeCallId = null) {
  return current.connect({
    accessToken: ui.token.value.trim(), deviceId: ui.mic.value, echoCancellation: ui.aec.checked, agents,
    stream: mic, resumeCallId,
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The live connection died: stop playback, then reconnect (docs/resilience.md "Browser page"). */
function dropped(old, reason, words) {
  ui.remote.srcObject = null; // the reply stops now; nothing of the dead call plays on
  if (old.fatal) {
    session = null;
    return giveUp(errorWords({ error: { code: old.fatal } }));
  }
  typed.reset();
  latency.reset();
  const since = performance.now();
  outage = {
    since, reason, words, attempts: 0, deadline: since + RECONNECT_FOR_MS,
    callId: old.callId, sessionId: old.sessionId,
  };
  session = null;
  log.add("local", { type: "transport.reconnecting", reason, detail: words });
  reconnect(outage);
}

async function reconnect(o) {
  let last = o.words;
  while (outage === o) {
    o.attempts += 1;
    setState("reconnecting", `attempt ${o.attempts}, ${last}`);
    const current = newSession();
    try {
      await openSession(current, agents ? o.callId : null);
      return; // live: onState -> resumed()
    } catch (err) {
      if (session === current) session = null;
      current.closed = true;
      current._release();
      if (outage !== o) return; // Disconnect was pressed meanwhile
      last = err instanceof ConnectError ? err.message : String(err?.message || err);
      log.add("local", { type: "transport.attempt_failed", attempt: o.attempts, detail: last });
      if (err instanceof ConnectError && !retryable(err.detail)) return giveUp(last);
      const wait = backoffDelay(o.attempts);
      if (performance.now() + wait > o.deadline) {
        return giveUp(`Gave up reconnecting after ${Math.round(RECONNECT_FOR_MS / 1000)} s (${o.attempts} attempts); last: ${last}`);
      }
      await sleep(wait);
    }
  }
}

function giveUp(message) {
  outage = null;
  setState("failed", message);
  log.add("local", { type: "transport.failed", state: "failed", detail: message });
  showError(message);
  ended();
}

/** A new session is live after an outage: tell it what was said, mark the transcript, go on. */
function resumed(o) {
  outage = null;
  sendReplay(session);
  const ms = Math.round(performance.now() - o.since);
  const from = o.sessionId && session.sessionId ? ` (${o.sessionId} → ${session.sessionId})` : "";
  transcript.mark("reconnect", `reconnected in ${ms} ms after ${o.reason}, ${o.attempts} attempt${o.attempts > 1 ? "s" : ""}${from}`);
  renderTranscript(ui.transcript, transcript);
  log.add("local", { type: "transport.reconnected", ms, attempts: o.attempts, reason: o.reason });
  session.setMuted(muted);
  setState("live", session.callId ? `Call ${session.callId}` : "");
  watchForRenewal(session);
}

async function connect() {
  if (session || outage) return;
  dismissErrors();
  log.restart();
  latency.reset();
  typed.reset();
  transcript.clear(agents);
  renderTranscript(ui.transcript, transcript);
  showAgent();
  const current = newSession();
  setState("connecting", "");
  if (ui.token.value) sessionStorage.setItem("bridge.token", ui.token.value);
  try {
    await openSession(current);
  } catch (err) {
    if (session !== current) return;
    const message = err instanceof ConnectError ? err.message : `Could not connect: ${err?.message || err}`;
    current.closed = true;
    current._release();
    setState("failed", message);
    log.add("local", { type: "transport.failed", state: "failed", detail: message });
    showError(message);
    ended();
  }
}

function disconnect() {
  const current = session;
  const wasOutage = outage;
  outage = null;
  current?.close(); // -> onState("closed") -> ended()
  if (wasOutage || session) {
    session = null;
    setState("closed", "");
    ended();
  }
}

function setMute(value) {
  muted = value;
  session?.setMuted(muted);
  ui.mute.setAttribute("aria-pressed", String(muted));
  ui.mute.textContent = muted ? "Unmute" : "Mute";
}

function sendText(text) {
  if (!session) return;
  typed.say(text); // interrupts the assistant if it is answering (turns.js)
}

async function refreshMicrophones() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const chosen = ui.mic.value;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  const options = [new Option("Default microphone", "")];
  devices.forEach((d, i) => {
    if (d.deviceId && d.deviceId !== "default") options.push(new Option(d.label || `Microphone ${i + 1}`, d.deviceId));
  });
  ui.mic.replaceChildren(...options);
  ui.mic.value = options.some((o) => o.value === chosen) ? chosen : "";
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

const stamp = () => new Date().toISOString().replace(/[:.]/g, "-");

function toggleDrawer(open) {
  ui.drawer.hidden = !open;
  document.body.classList.toggle("drawer-open", open);
  ui.menu.setAttribute("aria-expanded", String(open));
  ui.menu.setAttribute("aria-label", open ? "Hide transcript" : "Show transcript");
  (open ? ui.closeDrawer : ui.menu).focus();
}

async function loadConfig() {
  try {
    const resp = await fetch("/api/config");
    const config = await resp.json();
    ui.tokenField.hidden = !config.access_token_required;
    if (config.greeting && !ui.greeting.value) ui.greeting.value = config.greeting;
    if (config.offline) document.title += " (emulator)";
    agents = config.agents || null;
    transcript.clear(agents);
    showAgent();
  } catch {
    showError("Cannot reach the token server. Is `bridge serve` running?");
  }
}

$("session-form").addEventListener("submit", (e) => {
  e.preventDefault();
  connect();
});
ui.disconnect.addEventListener("click", disconnect);
ui.mute.addEventListener("click", () => setMute(!muted));
ui.dismiss.addEventListener("click", dismissErrors);
ui.say.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !session) return;
  sendText(text);
  ui.text.value = "";
});
ui.filter.addEventListener("input", () => log.setFilter(ui.filter.value));
ui.saveLog.addEventListener("click", () => download(`bridge-events-${stamp()}.jsonl`, log.toJsonl()));
ui.clearLog.addEventListener("click", () => log.clear());
ui.saveTranscript.addEventListener("click", () => download(`bridge-transcript-${stamp()}.jsonl`, transcript.toJsonl()));
ui.menu.addEventListener("click", () => toggleDrawer(ui.drawer.hidden));
ui.closeDrawer.addEventListener("click", () => toggleDrawer(false));
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !ui.drawer.hidden) toggleDrawer(false);
});
navigator.mediaDevices?.addEventListener?.("devicechange", refreshMicrophones);

ui.token.value = sessionStorage.getItem("bridge.token") || "";
setState("idle", "");
loadConfig();
refreshMicrophones();
