// The browser's Realtime connection: ask our server for an ephemeral key, then WebRTC straight to
// the Realtime API (PROTOCOL.md 2.1, 2.3). With server-side agents (`bridge serve --agents`) the
// offer goes to our /api/call instead: the server creates the call with its key and runs the agents
// over the sideband (PROTOCOL.md 2.4). No API key ever reaches this page.
//
// A live session watches its connection (docs/resilience.md "Browser page"): the peer connection or ICE
// failing (or `disconnected` for 2 s), the data channel closing, a `session_expired` error, or no inbound
// audio packet for 2.5 s (the server streams audio continuously, silence included) end it with
// onDrop(reason); the page (ui.js) then reconnects.
//
// A session opened as a *standby* (renewal before the cap, make-before-break) has an audio transceiver but
// sends no microphone until takeMicrophone() puts the same MediaStreamTrack on it; releaseMicrophone()
// takes it off the old one.

import { InboundWatch, TurnState } from "./resilience.js";

/** An error with a plain-words message for the error box. */
export class ConnectError extends Error {
  constructor(message, detail) {
    super(message);
    this.name = "ConnectError";
    this.detail = detail;
  }
}

const GATHER_TIMEOUT_MS = 2000;
const OPEN_TIMEOUT_MS = 15000;
const START_TIMEOUT_MS = 5000; // an open channel must announce its session (session.created) within this
const STATS_EVERY_MS = 250;
const FATAL_EVENT_CODES = new Set(["insufficient_quota", "invalid_api_key"]);
const DISCONNECTED_FOR_MS = 2000;

function authHeaders(accessToken, contentType) {
  const headers = { "Content-Type": contentType };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  return headers;
}

/** Our server's JSON error ({error: {code, message}}) in plain words. */
function serverRefusal(resp, body) {
  const message = body?.error?.message || `The token server answered HTTP ${resp.status}.`;
  const prefix = {
    401: "The access token was refused. ",
    402: "Out of quota. ",
    403: "This page may not use the token server. ",
    429: "Slow down. ",
  }[resp.status] || "";
  return new ConnectError(prefix + message, { status: resp.status, code: body?.error?.code });
}

const UNREACHABLE = "Cannot reach the token server. Is `bridge serve` running?";

/** POST /api/client-secret; returns {value, expires_at, session, calls_url}. */
export async function fetchClientSecret(accessToken) {
  let resp;
  try {
    resp = await fetch("/api/client-secret", {
      method: "POST", headers: authHeaders(accessToken, "application/json"), body: "{}",
    });
  } catch (err) {
    throw new ConnectError(UNREACHABLE, String(err));
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw serverRefusal(resp, body);
  if (typeof body.value !== "string" || typeof body.calls_url !== "string") {
    throw new ConnectError("The token server sent an unexpected answer.");
  }
  return body;
}

export async function openMicrophone(deviceId, echoCancellation) {
  // Echo cancellation keeps the model from hearing itself through loudspeakers (and barging in on
  // itself); a headset does not need it, and the user may turn it off.
  const audio = {
    echoCancellation,
    noiseSuppression: echoCancellation,
    autoGainControl: true,
    ...(deviceId ? { deviceId: { exact: deviceId } } : {}),
  };
  try {
    return await navigator.mediaDevices.getUserMedia({ audio });
  } catch (err) {
    const words = {
      NotAllowedError: "Microphone permission was denied. Allow it in the browser and try again.",
      NotFoundError: "No microphone was found.",
      OverconstrainedError: "The chosen microphone is not available any more.",
      NotReadableError: "The microphone is busy or failed to start.",
    }[err?.name];
    throw new ConnectError(words || `Cannot open the microphone (${err?.name || err}).`);
  }
}

function gatheringDone(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

function channelOpen(pc, dc) {
  if (dc.readyState === "open") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new ConnectError("The session did not start in time (data channel never opened).")),
      OPEN_TIMEOUT_MS,
    );
    dc.addEventListener("open", () => { clearTimeout(timer); resolve(); }, { once: true });
    dc.addEventListener("close", () => {
      clearTimeout(timer);
      reject(new ConnectError("The model closed the session while it was starting."));
    }, { once: true });
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState !== "failed") return;
      clearTimeout(timer);
      reject(new ConnectError("The network connection to the model failed while starting (ICE failure)."));
    });
  });
}

async function exchangeSdp(callsUrl, ephemeralKey, offerSdp) {
  let resp;
  try {
    resp = await fetch(callsUrl, {
      method: "POST",
      body: offerSdp,
      headers: { Authorization: `Bearer ${ephemeralKey}`, "Content-Type": "application/sdp" },
    });
  } catch (err) {
    throw new ConnectError("Cannot reach the Realtime API to start the call.", String(err));
  }
  const text = await resp.text();
  if (resp.status !== 201) {
    let message = `The Realtime API refused the call (HTTP ${resp.status}).`;
    let code;
    try {
      const error = JSON.parse(text)?.error;
      if (error?.message) message = `The Realtime API refused the call: ${error.message}`;
      code = error?.code || undefined; // insufficient_quota is final (resilience.js retryable)
    } catch { /* not JSON */ }
    throw new ConnectError(message, { status: resp.status, code });
  }
  const location = resp.headers.get("Location") || "";
  return { answer: text, callId: location.split("/").pop() || null };
}

/**
 * POST the offer to our /api/call (server-side agents); returns {answer, callId}. `resumeCallId`: the
 * call this one replaces after a drop (X-Resume-Call): the server starts it with that call's agent.
 */
async function serverCall(accessToken, offerSdp, resumeCallId) {
  let resp;
  const headers = authHeaders(accessToken, "application/sdp");
  if (resumeCallId) headers["X-Resume-Call"] = resumeCallId;
  try {
    resp = await fetch("/api/call", { method: "POST", headers, body: offerSdp });
  } catch (err) {
    throw new ConnectError(UNREACHABLE, String(err));
  }
  if (resp.status !== 201) throw serverRefusal(resp, await resp.json().catch(() => ({})));
  const answer = await resp.text();
  const callId = resp.headers.get("X-Call-Id") || (resp.headers.get("Location") || "").split("/").pop() || null;
  return { answer, callId };
}

/** Ask our server to end a call it created (it holds the key); best effort, survives page unload. */
function serverHangup(accessToken, callId) {
  fetch(`/api/call/${encodeURIComponent(callId)}/hangup`, {
    method: "POST", headers: authHeaders(accessToken, "application/json"), body: "{}", keepalive: true,
  }).catch(() => { /* closing our peer ends the call anyway */ });
}

/**
 * One session (one call). Callbacks: onEvent(direction, event), onState(state, detail), onTrack(stream),
 * onDrop(reason): the live connection died (the session is released; the microphone stream is kept when
 * the session does not own it). States: connecting -> live -> closed.
 */
export class RealtimeSession {
  constructor({ onEvent, onState, onTrack, onDrop }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.onTrack = onTrack;
    this.onDrop = onDrop;
    this.pc = null;
    this.dc = null;
    this.stream = null;
    this.ownsStream = true; // false once the page keeps the microphone across reconnects
    this.callId = null;
    this.sessionId = null;
    this.expiresAt = null; // session.created's expires_at (epoch seconds), when the service caps the session
    this.createdAt = null; // Date.now() when session.created arrived
    this.turns = new TurnState(); // this session's turn boundaries (renewal waits for one)
    this.remoteStream = null; // the model's audio (a standby session's is switched to on renewal)
    this.sender = null; // the RTCRtpSender that carries (or will carry) the microphone
    this.closed = false;
    this.live = false;
    this.statsTimer = null;
    this.disconnectedTimer = null;
    this.announced = null; // resolves with session.created
    this.fatal = null; // the code of an error event that ends the call for good
    this.viaServer = false; // true: our server created the call (agents) and must hang it up
    this.hungUp = false;
    this.accessToken = "";
  }

  /**
   * `agents`: the server runs the agents (config.agents), so the offer goes to /api/call. `stream`: a
   * microphone already open (a reconnect); `resumeCallId`: the call this one continues (a drop or a
   * renewal). `standby`: send no microphone until takeMicrophone() (renewal, make-before-break).
   */
  async connect({
    accessToken, deviceId, echoCancellation = true, agents = null, stream = null, resumeCallId = null, standby = false,
  }) {
    this.accessToken = accessToken;
    this.viaServer = Boolean(agents);
    let secret = null;
    if (!this.viaServer) {
      this.onState("connecting", "Asking the server for a key…");
      secret = await fetchClientSecret(accessToken);
      this.session = secret.session;
    }
    if (stream) {
      this.stream = stream;
      this.ownsStream = false;
    } else {
      this.onState("connecting", "Opening the microphone…");
      this.stream = await openMicrophone(deviceId, echoCancellation);
    }
    if (this.closed) return this._release();

    const pc = new RTCPeerConnection();
    this.pc = pc;
    pc.ontrack = (e) => {
      this.remoteStream = e.streams[0] || new MediaStream([e.track]);
      this.onTrack(this.remoteStream);
    };
    pc.onconnectionstatechange = () => this._onPcState();
    // The data channel and the mic track go in before the offer, so the offer carries both
    // the m=application and the m=audio sections (PROTOCOL.md 2.3).
    const dc = pc.createDataChannel("oai-events");
    this.dc = dc;
    let announce;
    this.announced = new Promise((resolve) => { announce = resolve; });
    this._announce = announce;
    dc.onmessage = (e) => this._onMessage(e.data);
    dc.onclose = () => this._onChannelClose();
    const [track] = this.stream.getAudioTracks();
    if (standby || !track) this.sender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;
    else this.sender = pc.addTrack(track, this.stream);

    this.onState("connecting", "Starting the call…");
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    const offer = pc.localDescription.sdp;
    const { answer, callId } = this.viaServer
      ? await serverCall(accessToken, offer, resumeCallId)
      : await exchangeSdp(secret.calls_url, secret.value, offer);
    this.callId = callId;
    if (this.closed) return this._release();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    await channelOpen(pc, dc);
    await this._sessionCreated();
    if (this.closed) return this._release();
    this.live = true;
    this._watchInbound();
    this.onState("live", callId ? `Call ${callId}` : "");
  }

  /** Live means the session announced itself: a reconnect replays into it only then (supervisor.py). */
  _sessionCreated() {
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new ConnectError("The session did not start in time (no session.created).")),
        START_TIMEOUT_MS);
    });
    return Promise.race([this.announced, late]).finally(() => clearTimeout(timer));
  }

  /** Poll getStats: inbound audio packets must keep coming while live (see the header). */
  _watchInbound() {
    const watch = new InboundWatch();
    let busy = false;
    this.statsTimer = setInterval(async () => {
      if (busy || !this.live || !this.pc) return;
      busy = true;
      try {
        let packets = 0;
        (await this.pc.getStats()).forEach((r) => {
          if (r.type === "inbound-rtp" && (r.kind || r.mediaType) === "audio") packets += r.packetsReceived || 0;
        });
        if (this.live && watch.sample(packets, performance.now())) this._drop("silent", "no audio from the model");
      } catch { /* closed meanwhile */ } finally {
        busy = false;
      }
    }, STATS_EVERY_MS);
  }

  /** The live connection is dead: release it and tell the page (once). */
  _drop(reason, words) {
    if (this.closed) return;
    this.closed = true;
    const wasLive = this.live;
    this._release();
    this.onEvent("local", { type: "transport.dropped", reason, detail: words });
    if (wasLive) this.onDrop?.(reason, words);
  }

  send(event) {
    if (!this.dc || this.dc.readyState !== "open") return false;
    this.dc.send(JSON.stringify(event));
    this.onEvent("client", event);
    return true;
  }

  /** Renewal: the microphone's track now goes to this session (the same MediaStreamTrack, no new prompt). */
  async takeMicrophone() {
    const [track] = this.stream?.getAudioTracks() || [];
    if (!track || !this.sender) return;
    this.sender.setStreams?.(this.stream);
    await this.sender.replaceTrack(track);
  }

  /** Renewal: this (old) session stops sending the microphone before it is closed. */
  async releaseMicrophone() {
    try { await this.sender?.replaceTrack(null); } catch { /* closed meanwhile */ }
  }

  setMuted(muted) {
    for (const track of this.stream?.getAudioTracks() || []) track.enabled = !muted;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this._release();
    this.onState("closed", "");
  }

  _release() {
    this.live = false;
    clearInterval(this.statsTimer);
    clearTimeout(this.disconnectedTimer);
    if (this.viaServer && this.callId && !this.hungUp) {
      this.hungUp = true;
      serverHangup(this.accessToken, this.callId);
    }
    try { this.dc?.close(); } catch { /* already closed */ }
    try { this.pc?.close(); } catch { /* already closed */ }
    if (this.ownsStream) for (const track of this.stream?.getTracks() || []) track.stop();
  }

  _onMessage(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      event = { type: "(unparseable)", raw: String(data).slice(0, 200) };
    }
    if (event.type === "session.created") {
      this.sessionId = event.session?.id ?? null;
      const expires = event.session?.expires_at;
      this.expiresAt = typeof expires === "number" && expires > 0 ? expires : null;
      this.createdAt = Date.now();
      this._announce?.(event);
    }
    this.turns.observe(event);
    this.onEvent("server", event);
    if (event.type === "error" && event.error?.code === "session_expired") {
      this._drop("session_expired", "the session reached its time limit");
    } else if (event.type === "error" && FATAL_EVENT_CODES.has(event.error?.code)) {
      this.fatal = event.error.code; // the close that follows is not worth a reconnect
    }
  }

  _onChannelClose() {
    if (this.live) this._drop("server_closed", "the data channel closed");
  }

  _onPcState() {
    const state = this.pc?.connectionState;
    this.onEvent("local", { type: "transport.connection_state", state });
    if (!this.live) return; // while starting, channelOpen reports a failure
    clearTimeout(this.disconnectedTimer);
    if (state === "failed" || state === "closed") this._drop("network", `connection ${state}`);
    else if (state === "disconnected") {
      this.disconnectedTimer = setTimeout(() => this._drop("network", "connection disconnected"), DISCONNECTED_FOR_MS);
    }
  }
}
