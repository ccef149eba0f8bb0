"""``bridge run``: wire devices, a link and the runtime together, and tear it all down cleanly.

Order of operations (each step fails with one clear line): credentials -> (offline: start the built-in
emulator) -> open audio devices -> transcript -> connect (timed) -> run until the link closes, Ctrl-C or
``--duration`` -> hang up, close the peer, finish the transcript. Ctrl-C and ``--duration`` exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import numpy as np

from bridge.agents import AgentController, load_agents
from bridge.config import DEFAULT_MODEL, DEFAULT_VOICE, Credentials, credentials, env, read_text_arg
from bridge.errors import AudioError, ConnectError
from bridge.link import http as rest
from bridge.link.base import RealtimeLink
from bridge.link.webrtc import WebRTCLink
from bridge.link.ws import WebSocketLink
from bridge.media import open_sink, open_source, resolve_device
from bridge.media.base import FRAME_MS, AudioSource
from bridge.media.playout import PlayoutBuffer
from bridge.media.track import MicTrack
from bridge.protocol.session import realtime_session
from bridge.rtc.loopback import loopback_candidates
from bridge.rtc.opus import LibopusEncoder
from bridge.session import PrintConsole, Runtime
from bridge.transcript import TranscriptWriter, default_path

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTIONS = "You are a helpful, concise voice assistant. Keep answers short and natural."
WEBRTC_PLAYOUT_TARGET_MS = 5  # least audio left queued after a device pull; grows on underruns (PlayoutBuffer)


def check_source(dev: str | None) -> None:
    """Fail fast on a microphone that cannot work; it is only started once the call is up."""
    spec = (dev or "").strip()
    if spec.casefold() == "null":
        return
    if spec.casefold().endswith(".wav"):
        if not Path(spec).is_file():
            raise AudioError(f"no such input file: {spec}")
        return
    resolve_device(spec or None, "input")


def is_loopback(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


class TimedSource(AudioSource):
    """Wraps the mic so the runtime learns when the first frame left (the server timeline's origin)."""

    def __init__(self, source: AudioSource, on_frame: Any) -> None:
        super().__init__()
        self._source = source
        self._on_frame = on_frame
        self._seen = False
        self.has_capture_thread = source.has_capture_thread  # type: ignore[misc]

    async def start(self) -> None:
        await self._source.start()

    async def read_frame(self) -> tuple[np.ndarray, float]:
        frame, captured = await self._source.read_frame()
        self.dropped = self._source.dropped
        if not self._seen:
            self._seen = True
            self._on_frame(captured - FRAME_MS / 1000)  # the frame covers [captured - 20 ms, captured]
        return frame, captured

    def capture_to(self, consumer: Any) -> None:
        """Forward :meth:`bridge.media.devices.DeviceSource.capture_to`; the first frame's capture time
        reaches the runtime on its loop."""
        if consumer is None:
            self._source.capture_to(None)
            return
        loop = asyncio.get_running_loop()

        def first_then(pcm: np.ndarray, captured: float) -> None:
            if not self._seen:
                self._seen = True
                loop.call_soon_threadsafe(self._on_frame, captured - FRAME_MS / 1000)
            consumer(pcm, captured)

        self._source.capture_to(first_then)

    def describe(self) -> dict[str, object]:
        return self._source.describe()

    async def aclose(self) -> None:
        await self._source.aclose()


async def _offline_credentials(stack: AsyncExitStack) -> Credentials:
    from bridge.app.offline import start_emulator

    base_url, api_key = await stack.enter_async_context(start_emulator())
    print(f"bridge: no OPENAI_API_KEY: using the built-in emulator at {base_url} (offline)", flush=True)
    return Credentials(api_key=api_key, api_base=base_url)


async def _link(
    args: argparse.Namespace,
    creds: Credentials,
    http: aiohttp.ClientSession,
    session: dict[str, Any],
    source: TimedSource,
    runtime_box: list[Runtime],
) -> RealtimeLink:
    def on_audio(frame: np.ndarray) -> None:
        runtime_box[0].on_remote_audio(frame)

    if args.transport == "ws":
        if creds.token_url or not creds.api_key:
            key = (await rest.mint_key(http, creds, session)).value
        else:
            key = creds.api_key
        return WebSocketLink(http, creds.api_base, session["model"], key, source)
    ek = await rest.mint_key(http, creds, session)
    return WebRTCLink(
        http,
        creds.api_base,
        ek.value,
        MicTrack(source, encoder=LibopusEncoder()),
        on_audio,
        calls_url=ek.calls_url,
        hangup_key=creds.api_key or ek.value,
        fast_rtp=env("BRIDGE_FAST_RTP", "1") != "0",
        uplink_thread=env("BRIDGE_FAST_RTP", "1") not in ("0", "loop"),
    )


async def amain(args: argparse.Namespace) -> int:
    creds = credentials(args.api_base, args.token_url, args.token_secret)
    model = args.model or DEFAULT_MODEL
    voice = args.voice or DEFAULT_VOICE
    # push-to-talk: turn_detection null, the key ends the turn (bridge.app.ptt)
    session = realtime_session(model, voice, read_text_arg(args.instructions) or DEFAULT_INSTRUCTIONS, vad=not args.ptt)
    controller = AgentController(load_agents(args.agents)) if args.agents else None
    if controller is not None:
        session = controller.session_config(session)
    transcript = TranscriptWriter(Path(args.transcript) if args.transcript else default_path())
    stop = asyncio.Event()
    async with AsyncExitStack() as stack:
        _stop_on_signals(stack, stop)
        if args.offline or creds.offline:
            creds = await _offline_credentials(stack)
        if is_loopback(creds.api_base):
            # A server on this machine (the emulator) is reachable on loopback only; aioice never offers
            # 127.0.0.1 by itself, so restrict our host candidates to it (bridge.rtc.loopback).
            stack.enter_context(loopback_candidates())
        runtime_box: list[Runtime] = []
        raw_source = open_source(args.input)
        sink = open_sink(args.output)
        source = TimedSource(raw_source, lambda t: runtime_box[0].on_mic_frame_sent(t))
        target = WEBRTC_PLAYOUT_TARGET_MS if args.transport == "webrtc" else None
        playout = PlayoutBuffer(target_ms=target)

        # Devices first: a wrong device is reported before anything touches the network.
        check_source(args.input)
        stack.push_async_callback(source.aclose)  # started once connected (MicTrack starts it on first pull)
        await sink.start(playout.pull)
        stack.push_async_callback(sink.aclose)
        playout.set_output_latency(sink.output_latency)

        http = await stack.enter_async_context(aiohttp.ClientSession())
        link = await _link(args, creds, http, session, source, runtime_box)
        bargein = getattr(args, "bargein", "exact")
        runtime = Runtime(link, playout, transcript, PrintConsole(), tools=controller, bargein_mode=bargein)
        runtime_box.append(runtime)
        transcript.open()
        stack.callback(transcript.close)
        stack.callback(_write_stats, transcript, playout, link, raw_source, sink)

        stack.push_async_callback(link.aclose)
        timings = await link.connect()
        log.info("connected in %.0f ms: %s", timings.total_ms, timings.steps)
        if args.transport == "ws" and not creds.token_url:
            await link.send({"type": "session.update", "session": {k: v for k, v in session.items() if k != "model"}})
        await source.start()  # idempotent; a no-op if the WebRTC sender already started it
        devices = {"input": raw_source.describe(), "output": sink.describe(), **_device_times(raw_source, sink)}
        runtime.session_info.update(connect_ms=timings.steps, **devices)
        pumps = [link.pump_audio()]
        if args.ptt:
            from bridge.app.ptt import PushToTalk

            pumps.append(PushToTalk(runtime).run())
        run = asyncio.ensure_future(runtime.run(*pumps))
        waiters = [run, asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        if run.done() and not run.cancelled() and run.exception() is not None:
            raise run.exception()  # type: ignore[misc]
        if runtime.closed.is_set() and not stop.is_set():
            # not asked to stop: the server ended the session or the network dropped
            code = getattr(link, "close_code", None)
            reason = getattr(link, "close_reason", "") or ""
            detail = f" (close {code}{': ' + reason if reason else ''})" if code else ""
            raise ConnectError(f"the connection to the model closed{detail}; transcript: {transcript.path}")
    return 0


def _write_stats(
    transcript: TranscriptWriter, playout: PlayoutBuffer, link: RealtimeLink, source: Any, sink: Any
) -> None:
    """A last ``stats`` line: underruns, drift control, receive-path and short-RTP-path counters, mic drops."""
    fields: dict[str, Any] = {"playout": dataclasses.asdict(playout.counters), "playout_target_ms": playout.target_ms}
    receiver = getattr(link, "receiver", None)
    if receiver is not None:
        st = receiver.stats
        fields["receiver"] = {
            "frames_out": st.frames_out,
            "concealed": st.concealed,
            "late_dropped": st.late_dropped,
            "duplicates": st.duplicates,
            "reordered": st.reordered,
            "wait_ms": round(receiver.wait_ms, 1),
        }
    fast = getattr(link, "fast_stats", None)
    if fast is not None:
        fields["fast_rtp"] = dataclasses.asdict(fast)
    uplink_loss = getattr(link, "uplink_loss", None)
    if uplink_loss is not None:
        fields["uplink_loss"] = uplink_loss()
    mic, speaker = source.stats(), sink.stats()
    fields["mic_dropped"] = mic["dropped"]
    fields["mic_overflows"] = mic.get("overflows", 0)  # sound card input lost (callback late)
    fields["mic_errors"] = mic["errors"]
    fields["sink_underruns"] = speaker.get("underruns", 0)
    fields["sink_errors"] = speaker["errors"]
    transcript.write("stats", **fields)


def _stop_on_signals(stack: AsyncExitStack, stop: asyncio.Event) -> None:
    """Ctrl-C / SIGTERM end the run cleanly (exit 0, call hung up), like --duration."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            stack.callback(loop.remove_signal_handler, sig)


def _device_times(source: Any, sink: Any) -> dict[str, float]:
    """Wall-clock time of each .wav file's first sample, to line recordings up with server logs."""
    out: dict[str, float] = {}
    for name, dev in (("input_start_unix", source), ("output_start_unix", sink)):
        value = dev.start_unix
        if value:
            out[name] = round(float(value), 6)
    return out


def _run_loop(coro: Any) -> int:
    """uvloop when installed (libuv's loop: measurably less CPU per packet, docs/benchmarks.md), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(args: argparse.Namespace) -> int:
    # PortAudio's callback thread needs the GIL promptly; the default 5 ms switch interval can starve it
    # on a 2-core machine and cause underruns.
    sys.setswitchinterval(0.001)
    t0 = time.perf_counter()
    code = _run_loop(amain(args))
    log.info("bridge run finished after %.1f s", time.perf_counter() - t0)
    return code
