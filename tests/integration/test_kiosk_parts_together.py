"""The kiosk parts wired as docs/kiosk.md "Interfaces for the kiosk runner" shows: a capture thread feeds the
real VAD and pre-roll, the loop opens a backlog on the onset, the WebRTC drain runs in the capture thread,
and the operator view (real HTTP server) and sd_notify (real socket) follow. No call is made: the runner
that opens calls is not part of these parts."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.kiosk.budget import BudgetSettings, CallBudget
from bridge.kiosk.health import KioskState, KioskStatus, serve_health
from bridge.kiosk.preroll import DrainSettings, Frame, PreRoll
from bridge.kiosk.systemd import Notifier
from bridge.kiosk.vad import VadEvent, VoiceActivity, load_engine

RATE = 48_000
N = 960


def visitor(tmp: Path) -> tuple[np.ndarray, float, float]:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("needs espeak-ng and sox")
    raw, out = tmp / "raw.wav", tmp / "48k.wav"
    subprocess.run(["espeak-ng", "-v", "en-gb", "-w", str(raw), "Hello, where can I buy a ticket?"], check=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(out)], check=True)
    with wave.open(str(out), "rb") as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    loud = np.nonzero(np.abs(speech) > 500)[0]
    rng = np.random.default_rng(3)
    room = (rng.standard_normal(5 * RATE + len(speech)) * 20).astype(np.int16)
    room[RATE : RATE + len(speech)] += speech
    return room, 1.0 + loud[0] / RATE, 1.0 + loud[-1] / RATE


async def test_first_words_survive_the_connect_and_the_operator_sees_it(tmp_path: Path) -> None:
    pcm, first_word, last_word = visitor(tmp_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    budget = CallBudget(BudgetSettings(max_call_s=60, max_minutes_per_hour=10))
    status = KioskStatus(
        budget_remaining=budget.remaining_s,
        on_change=lambda old, new, why: notifier.status(new.value + (f": {why}" if why else "")),
    )
    vad = VoiceActivity(load_engine())
    preroll = PreRoll(0.8)
    events: asyncio.Queue[VadEvent] = asyncio.Queue()
    connected = threading.Event()
    sent: list[Frame] = []
    live_again = threading.Event()
    release = vad.gate.settings.release

    def on_frame(frame: np.ndarray, captured: float) -> None:  # PortAudio's input thread in the runner
        v = vad.feed(frame, captured)
        status.mic_alive(captured)
        speech = v.probability >= release
        if live_again.is_set():
            sent.append(Frame(frame.copy(), captured, speech))  # straight to the uplink
        else:
            preroll.push(frame, captured, speech)  # the ring, or the backlog once one is open
            backlog = preroll.backlog
            if backlog is not None and connected.is_set():  # the WebRTC uplink: one frame per 20 ms tick
                out = backlog.next_paced()
                if out is not None:
                    sent.append(out)
                if len(backlog) == 0:
                    preroll.stop_backlog()
                    live_again.set()
        if v.event is not None:
            loop.call_soon_threadsafe(events.put_nowait, v.event)
            if v.event.kind == "onset":
                onset_pending.set()

    onset_pending = threading.Event()
    onset_seen = threading.Event()

    def capture() -> None:  # a sound card's clock, offline: 20 ms of audio per frame, not paced
        opened_at: int | None = None
        for i in range(len(pcm) // N):
            on_frame(pcm[i * N : (i + 1) * N], (i + 1) * N / RATE)
            if onset_pending.is_set() and opened_at is None:
                # a real card keeps going; the loop reacts well within one 20 ms frame: model that by
                # letting it open the backlog before the next frame
                assert onset_seen.wait(10)
                opened_at = i
            if opened_at is not None and i - opened_at == 30:  # the call is up 0.6 s after the onset
                connected.set()

    async with serve_health(status, port=0) as server, aiohttp.ClientSession() as http:
        notifier.ready("idle")
        thread = threading.Thread(target=capture)
        thread.start()
        async with asyncio.timeout(30):
            onset = await events.get()
            assert onset.kind == "onset"
            assert budget.may_wake()
            preroll.start_backlog(onset.speech_from - DrainSettings().lead_s, DrainSettings())
            onset_seen.set()
            status.on_wake()
            status.set_state(KioskState.CONNECTING)
            budget.call_started()
            status.on_call_start()
            async with http.get(server.url + "/healthz") as resp:
                doc = await resp.json()
            assert doc["state"] == "connecting" and doc["wakes_today"] == 1
            assert await asyncio.to_thread(connected.wait, 10)
            status.set_state(KioskState.IN_CALL)
            await asyncio.to_thread(thread.join)
        assert live_again.is_set()
        # the first word was spoken before the VAD fired and long before the call: it was delivered
        assert sent[0].captured - 0.02 <= first_word
        speech_sent = [f.captured for f in sent if f.speech]
        assert speech_sent[0] <= first_word + 0.1 and speech_sent[-1] >= last_word
        assert [f.captured for f in sent] == sorted(f.captured for f in sent)
        assert onset.at - first_word > 0.1  # the VAD's own delay, which the pre-roll covered
        budget.call_ended()
        status.on_call_end("idle", user_turns=1, seconds=12)
        status.set_state(KioskState.IDLE)
        async with http.get(server.url + "/metrics") as resp:
            text = await resp.text()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert values[("bridge_kiosk_calls_total", (("reason", "idle"),))] == 1
    assert values[("bridge_kiosk_false_wakes_total", ())] == 0
    assert values[("bridge_kiosk_wakes_total", (("source", "vad"),))] == 1
    lines = []
    while True:
        try:
            lines.append(sock.recv(4096).decode())
        except BlockingIOError:
            break
    sock.close()
    assert lines == ["READY=1\nSTATUS=idle", "STATUS=connecting", "STATUS=in_call", "STATUS=idle"]
