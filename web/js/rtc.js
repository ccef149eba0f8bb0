// The browser's Realtime connection: ask our server for an ephemeral key, then WebRTC straight to
// the Realtime API (PROTOCOL.md 2.1, 2.3). With server-side agents (`bridge serve --agents`) the
// offer goes to our /api/call instead: the server creates the call with its key and runs the agents
// over the sideband (PROTOCOL.md 2.4). No API key ever reaches this page.

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

async function openMicrophone(deviceId, echoCancellation) {
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

function channelOpen(dc) {
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
    try {
      const detail = JSON.parse(text)?.error?.message;
      if (detail) message = `The Realtime API refused the call: ${detail}`;
    } catch { /* not JSON */ }
    throw new ConnectError(message, { status: resp.status });
  }
  const location = resp.headers.get("Location") || "";
  return { answer: text, callId: location.split("/").pop() || null };
}

/** POST the offer to our /api/call (server-side agents); returns {answer, callId}. */
async function serverCall(accessToken, offerSdp) {
  let resp;
  try {
    resp = await fetch("/api/call", {
      method: "POST", headers: authHeaders(accessToken, "application/sdp"), body: offerSdp,
    });
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
 * One live session. Callbacks: onEvent(direction, event), onState(state, detail), onTrack(stream).
 * States: connecting -> live -> closed | failed.
 */
export class RealtimeSession {
  constructor({ onEvent, onState, onTrack }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.onTrack = onTrack;
    this.pc = null;
    this.dc = null;
    this.stream = null;
    this.callId = null;
    this.closed = false;
    this.viaServer = false; // true: our server created the call (agents) and must hang it up
    this.hungUp = false;
    this.accessToken = "";
  }

  /** `agents`: the server runs the agents (config.agents), so the offer goes to /api/call. */
  async connect({ accessToken, deviceId, echoCancellation = true, agents = null }) {
    this.accessToken = accessToken;
    this.viaServer = Boolean(agents);
    let secret = null;
    if (!this.viaServer) {
      this.onState("connecting", "Asking the server for a key…");
      secret = await fetchClientSecret(accessToken);
      this.session = secret.session;
    }
    this.onState("connecting", "Opening the microphone…");
    this.stream = await openMicrophone(deviceId, echoCancellation);
    if (this.closed) return this._release();

    const pc = new RTCPeerConnection();
    this.pc = pc;
    pc.ontrack = (e) => this.onTrack(e.streams[0] || new MediaStream([e.track]));
    pc.onconnectionstatechange = () => this._onPcState();
    // The data channel and the mic track go in before the offer, so the offer carries both
    // the m=application and the m=audio sections (PROTOCOL.md 2.3).
    const dc = pc.createDataChannel("oai-events");
    this.dc = dc;
    dc.onmessage = (e) => this._onMessage(e.data);
    dc.onclose = () => this._onChannelClose();
    for (const track of this.stream.getAudioTracks()) pc.addTrack(track, this.stream);

    this.onState("connecting", "Starting the call…");
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    const offer = pc.localDescription.sdp;
    const { answer, callId } = this.viaServer
      ? await serverCall(accessToken, offer)
      : await exchangeSdp(secret.calls_url, secret.value, offer);
    this.callId = callId;
    if (this.closed) return this._release();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    await channelOpen(dc);
    this.onState("live", callId ? `Call ${callId}` : "");
  }

  send(event) {
    if (!this.dc || this.dc.readyState !== "open") return false;
    this.dc.send(JSON.stringify(event));
    this.onEvent("client", event);
    return true;
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
    if (this.viaServer && this.callId && !this.hungUp) {
      this.hungUp = true;
      serverHangup(this.accessToken, this.callId);
    }
    try { this.dc?.close(); } catch { /* already closed */ }
    try { this.pc?.close(); } catch { /* already closed */ }
    for (const track of this.stream?.getTracks() || []) track.stop();
  }

  _onMessage(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      event = { type: "(unparseable)", raw: String(data).slice(0, 200) };
    }
    this.onEvent("server", event);
  }

  _onChannelClose() {
    if (this.closed) return;
    this.closed = true;
    this._release();
    this.onState("failed", "The model closed the session.");
  }

  _onPcState() {
    const state = this.pc?.connectionState;
    this.onEvent("local", { type: "transport.connection_state", state });
    if (state === "failed" && !this.closed) {
      this.closed = true;
      this._release();
      this.onState("failed", "Lost the connection to the model (network failure).");
    }
  }
}
