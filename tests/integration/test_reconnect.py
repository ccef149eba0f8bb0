"""``bridge run`` keeps the conversation going through the emulator's faults (issue: resilience): drops,
silent deaths, server closes, refusals, restarts, the session cap; fatal closes end it with one line."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app.run import amain
from bridge.emulator.testing import RunningEmulator, running_emulator
from bridge.errors import AuthError, ConnectError, ProtocolError
from bridge.rtc.loopback import loopback_candidates
from tests.audio import write_wav
from tests.helpers import run_config, transcript_lines, until

TURN = [("tone", 0.6), ("silence", 1.4)]  # one user turn every 2 s: VAD turn, reply ~0.5 s later
KOREAN = Path(__file__).resolve().parents[2] / "examples" / "agents" / "korean"


def kinds(tmp: Path, kind: str) -> list[dict[str, Any]]:
    path = tmp / "t.jsonl"
    return [x for x in transcript_lines(path) if x["kind"] == kind] if path.exists() else []


@contextlib.asynccontextmanager
async def bridge_running(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    seconds: float,
    *flags: str,
    mic: list[tuple[str, float]] | None = None,
    **emu: Any,
) -> AsyncIterator[tuple[RunningEmulator, asyncio.Task[int]]]:
    """``bridge run`` in-process against an emulator (``emu``: its config); the .wav microphone says ``mic``
    (default: a turn every 2 s)."""
    write_wav(tmp / "in.wav", mic or [("silence", 0.3), *TURN * int(seconds / 2 + 2)])
    config: dict[str, Any] = {"think_ms": 50, "reply_seconds": 0.5, **emu}
    async with running_emulator(**config) as emulator:
        monkeypatch.setenv("OPENAI_API_KEY", emulator.api_key)
        with loopback_candidates():
            task = asyncio.create_task(amain(run_config(tmp, emulator.base_url, transport, seconds, *flags)))
            try:
                yield emulator, task
            finally:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def first_reply(tmp: Path, task: asyncio.Task[int]) -> None:
    await until(lambda: kinds(tmp, "assistant") or task.done(), "the first reply", 15)
    assert not task.done(), task


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_a_dropped_connection_is_replaced_and_told_the_conversation(tmp_path, monkeypatch, transport) -> None:
    async with bridge_running(tmp_path, monkeypatch, transport, 9, "--reconnect-for", "10") as (emu, task):
        await first_reply(tmp_path, task)
        (old,) = emu.open_sessions()
        await emu.inject("drop")
        await until(lambda: kinds(tmp_path, "reconnect"), "the reconnect line", 10)
        (line,) = kinds(tmp_path, "reconnect")
        (new,) = emu.open_sessions()
        assert new["id"] != old["id"] and line["old_session_id"] == old["id"] and line["new_session_id"] == new["id"]
        assert line["reason"] in ("network", "server_closed") and line["attempts"] >= 1 and line["replayed"] == 1

        def said() -> str:  # the new session's system messages (the replay is on its way as the line is written)
            (session,) = emu.open_sessions()
            return " ".join(i["text"] or "" for i in session["items"] if i["role"] == "system")

        # the new session holds what was said before (one system message: the summary)
        await until(lambda: "User: (audio" in said(), "the replayed summary in the new session", 5)
        assert "Assistant: This is reply number 1" in said()
        replies_before = len(kinds(tmp_path, "assistant"))
        await until(lambda: len(kinds(tmp_path, "assistant")) > replies_before, "a reply in the new session", 10)
        assert await asyncio.wait_for(task, 15) == 0
    lines = transcript_lines(tmp_path / "t.jsonl")
    sessions = [x for x in lines if x["kind"] == "session"]
    assert len(sessions) == 2 and sessions[0]["session_id"] != sessions[1]["session_id"]
    assert lines[-1]["kind"] == "stats" and lines[-1]["reconnects"] == 1
    assert not emu.open_sessions()  # the call was hung up at the end: nothing leaked


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_a_silent_death_is_noticed_within_3_s(tmp_path, monkeypatch, transport) -> None:
    async with bridge_running(tmp_path, monkeypatch, transport, 9, "--reconnect-for", "10") as (emu, task):
        await first_reply(tmp_path, task)
        stalled_at = time.time()
        await emu.inject("stall")  # no events, no pongs, no RTP; nothing closed
        await until(lambda: kinds(tmp_path, "reconnect"), "the reconnect line", 10)
        (line,) = kinds(tmp_path, "reconnect")
        assert line["reason"] == "silent"
        assert line["detected_unix"] - stalled_at <= 3.0, line
        assert await asyncio.wait_for(task, 15) == 0


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_the_session_cap_is_met_by_a_new_session_made_before_the_old_one_ends(
    tmp_path, monkeypatch, transport
) -> None:
    """Sessions capped at 8 s: in their last 2 s the call moves to a new session (no gap), so the server never
    has to say session_expired; turns go on after. The pause the move needs (the user quiet from 2.9 to 8.5 s,
    the second reply over by ~4 s) starts 2 s before the renewal window opens (6 s): a loaded machine may
    play the reply late without leaving the window without a turn boundary."""
    mic = [("silence", 0.3), *TURN * 2, ("silence", 4.2), *TURN * 2]
    async with bridge_running(tmp_path, monkeypatch, transport, 12, mic=mic, session_max_seconds=8.0) as (_, task):
        assert await asyncio.wait_for(task, 30) == 0
    lines = transcript_lines(tmp_path / "t.jsonl")
    renewals = [x for x in lines if x["kind"] == "reconnect"]
    assert renewals and all(x["reason"] == "renewal" and x["downtime_ms"] == 0 for x in renewals), renewals
    assert not [x for x in lines if x["kind"] == "error" and x["code"] == "session_expired"]
    assert sum(1 for x in lines if x["kind"] == "session") == len(renewals) + 1
    after = lines[lines.index(renewals[0]) :]
    assert any(x["kind"] == "assistant" for x in after), after  # the conversation went on in the new session


@pytest.mark.parametrize(("code", "error"), [(3000, AuthError), (4000, ProtocolError)])
async def test_a_fatal_close_ends_the_call_without_retrying(tmp_path, monkeypatch, code, error) -> None:
    async with bridge_running(tmp_path, monkeypatch, "ws", 9) as (emu, task):
        await first_reply(tmp_path, task)
        await emu.inject("close", code=code)
        with pytest.raises(error, match="connection to the model closed"):
            await asyncio.wait_for(task, 10)
        assert not kinds(tmp_path, "reconnect") and not emu.open_sessions()
    assert transcript_lines(tmp_path / "t.jsonl")[-1]["kind"] == "stats"  # the transcript is complete


async def test_a_refusing_service_is_retried_with_backoff(tmp_path, monkeypatch) -> None:
    async with bridge_running(tmp_path, monkeypatch, "webrtc", 9, "--reconnect-for", "10") as (emu, task):
        await first_reply(tmp_path, task)
        await emu.inject("refuse", status=500, seconds=1.5)
        await emu.inject("drop")
        await until(lambda: kinds(tmp_path, "reconnect"), "the reconnect line", 10)
        (line,) = kinds(tmp_path, "reconnect")
        assert line["attempts"] >= 2 and line["downtime_ms"] >= 1000, line
        assert await asyncio.wait_for(task, 15) == 0


async def test_a_restarted_server_gets_a_fresh_key(tmp_path, monkeypatch) -> None:
    async with bridge_running(tmp_path, monkeypatch, "webrtc", 9, "--reconnect-for", "10") as (emu, task):
        await first_reply(tmp_path, task)
        await emu.restart()  # every session and minted key forgotten
        await until(lambda: kinds(tmp_path, "reconnect"), "the reconnect line", 10)
        assert len(emu.open_sessions()) == 1
        assert await asyncio.wait_for(task, 15) == 0


async def test_giving_up_is_one_line_and_a_non_zero_exit(tmp_path, monkeypatch) -> None:
    async with bridge_running(tmp_path, monkeypatch, "ws", 20, "--reconnect-for", "1.5") as (emu, task):
        await first_reply(tmp_path, task)
        await emu.inject("refuse", status=429, seconds=30)
        await emu.inject("drop")
        with pytest.raises(ConnectError, match="gave up reconnecting after 1.5 s"):
            await asyncio.wait_for(task, 10)


async def test_replayed_items_that_trap_the_model_in_text_get_a_spoken_reply(tmp_path, monkeypatch) -> None:
    """``--replay items`` seeds assistant text items; with the emulator's text-only trap on, the first reply
    after the reconnect comes back as text: it is deleted and asked for again with audio."""
    async with bridge_running(
        tmp_path, monkeypatch, "webrtc", 10, "--replay", "items", "--reconnect-for", "10", quote_context=True
    ) as (emu, task):
        await first_reply(tmp_path, task)
        await emu.inject("text_only", enabled=True)
        await emu.inject("drop")
        await until(lambda: kinds(tmp_path, "reconnect"), "the reconnect line", 10)
        assert await asyncio.wait_for(task, 15) == 0
        log = emu.log_events("in")
    asks = [r["event"] for r in log if r["event"].get("type") == "response.create"]
    assert any((e.get("response") or {}).get("output_modalities") == ["audio"] for e in asks), asks
    stats = transcript_lines(tmp_path / "t.jsonl")[-1]
    assert stats["spoken_again"] >= 1
    replies = [x["text"] for x in kinds(tmp_path, "assistant")]
    # a reply after the reconnect quotes a user turn from before it: the replayed items are context
    assert any("You said before" in (t or "") for t in replies[1:]), replies


async def test_with_agents_a_new_session_starts_with_the_agent_that_was_active(tmp_path, monkeypatch) -> None:
    from bridge.agents import load_agents

    root = KOREAN
    agents = load_agents(root / "agents.toml")
    mic = [("silence", 0.3), ("tone", 0.6), ("silence", 9.0)]
    async with bridge_running(
        tmp_path,
        monkeypatch,
        "webrtc",
        9,
        "--agents",
        str(root / "agents.toml"),
        "--reconnect-for",
        "10",
        mic=mic,
        behaviour=f"script:{root / 'emulator_script.toml'}",
    ) as (emu, task):
        await until(lambda: kinds(tmp_path, "handoff") or task.done(), "the first handoff", 15)
        (handoff,) = kinds(tmp_path, "handoff")
        assert handoff["to"] == "korean_20s"
        await until(lambda: not any(e["type"] == "response.create" for e in pending_creates(emu)), "settled", 5)
        await emu.inject("drop")
        await until(lambda: kinds(tmp_path, "reconnect"), "the reconnect line", 10)
        created = [e for e in emu.server_events() if e["type"] == "session.created"]
        assert len(created) == 2
        new = created[-1]["session"]
        assert new["instructions"] == agents.instructions_for("korean_20s")
        assert {t["name"] for t in new["tools"]} == {t["name"] for t in agents.tools_for("korean_20s")}
        assert await asyncio.wait_for(task, 15) == 0


def pending_creates(emu: RunningEmulator) -> list[dict[str, Any]]:
    """Client response.create events the server has not answered with response.created yet."""
    sent = [r["event"] for r in emu.log_events("in") if r["event"].get("type") == "response.create"]
    started = [e for e in emu.server_events() if e["type"] == "response.created"]
    return sent[len(started) :]


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_sigterm_during_an_outage_ends_within_2_s(tmp_path, transport) -> None:
    import signal

    from tests.helpers import start_bridge

    write_wav(tmp_path / "in.wav", [("silence", 0.3), *TURN * 10])
    transcript = tmp_path / "t.jsonl"
    async with running_emulator(think_ms=50, reply_seconds=0.5) as emu:
        proc = await start_bridge(
            *("run", "--transport", transport, "--api-base", emu.base_url, "--reconnect-for", "60"),
            *("--input", str(tmp_path / "in.wav"), "--output", "null", "--transcript", str(transcript)),
            env={"OPENAI_API_KEY": emu.api_key},
        )
        try:
            await until(lambda: kinds(tmp_path, "assistant"), "the first reply", 15)
            await emu.inject("refuse", status=500, seconds=60)
            await emu.inject("drop")
            assert proc.stdout is not None
            seen = b""
            async with asyncio.timeout(10):
                while b"reconnecting (attempt 2" not in seen:  # it is retrying with backoff now
                    seen += await proc.stdout.read(256)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 10)
            elapsed = time.monotonic() - t0
        finally:
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 0, err.decode()
    assert elapsed <= 2.0, elapsed
    lines = transcript_lines(transcript)
    assert lines[-1]["kind"] == "stats" and lines[-1]["reconnects"] == 0
