"""``bridge bench --live`` (issue #6): the live path end to end against our emulator, and its guard rails.

OpenAI is unreachable here, so the live run is pointed (``BRIDGE_BENCH_API_BASE`` + ``OPENAI_API_KEY``)
at ``bridge emulate --behaviour speech`` on 127.0.0.1: real ``bridge run`` subprocesses, spoken prompts,
numbers measured from the recorded audio. The CI guard is bypassed only through ``allow_ci=True``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.bench import live

pytestmark = pytest.mark.timeout(90)
KEY = "sk-live-test-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def speech_emulator(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    argv = [sys.executable, "-m", "bridge", "emulate", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--behaviour", "speech", "--api-keys", KEY, "--think-ms", "200", "--log", str(tmp_path / "emu.jsonl")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        assert "listening on" in line, line
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_live_run_against_the_speech_emulator(
    speech_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("BRIDGE_BENCH_API_BASE", speech_emulator)
    monkeypatch.setenv("BRIDGE_BENCH_EXPECT_RESPONSE_S", "0.9")  # VAD 500 ms + think 200 ms + synthesis
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    args = argparse.Namespace(transports="webrtc,ws", trials=1, out=str(tmp_path / "out"), profiles="clean", verbose=0)

    rc = live.main(args, allow_ci=True)

    printed = capsys.readouterr().out
    assert printed.startswith(f"bridge bench --live: API base {speech_emulator} ")
    assert KEY not in printed
    doc = json.loads((tmp_path / "out" / "live.json").read_text())
    cells = {c["transport"]: c for c in doc["cells"]}
    assert set(cells) == {"webrtc", "ws"}
    for transport, c in cells.items():
        assert c["errors"] == [], (transport, c["errors"])
        resp = c["response_ms"]
        assert resp["n"] == 1 and 0 < resp["p50"] < 5000, (transport, c)
        stop = c["bargein_stop_ms"]
        assert stop["n"] == 1 and 0 < stop["p50"] < 1500, (transport, c)
        assert 500 < c["bargein_into_reply_ms"]["p50"] < 3500, (transport, c)  # it landed inside the reply
        rep = c["reported"]
        assert rep["response_ms"]["n"] >= 1 and rep["bargein_ms"]["n"] >= 1, (transport, rep)
        assert 0 < c["cpu_pct"] < 200 and 20 < c["rss_mb"] < 2000, (transport, c)
    assert rc == 0
    assert "| webrtc |" in (tmp_path / "out" / "live.md").read_text()
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".md", ".stdout", ".stderr"):
            assert KEY not in f.read_text(errors="replace"), f  # the key never lands in a file we wrote


def _bench_live(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CI", "BRIDGE_BENCH_API_BASE")}
    child.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "--live", "--trials", "1"],
        env=child,
        cwd=tmp_path,  # no .env from the checkout
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_live_refuses_in_ci(tmp_path: Path) -> None:
    r = _bench_live(tmp_path, CI="true", OPENAI_API_KEY=KEY)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "CI" in r.stderr, r.stderr
    assert KEY not in r.stdout + r.stderr
    assert not (tmp_path / "out").exists()


def test_live_refuses_without_a_key(tmp_path: Path) -> None:
    r = _bench_live(tmp_path)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "OPENAI_API_KEY" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_guards_pick_the_api_base() -> None:
    base = {"OPENAI_API_KEY": KEY}
    assert live.check_guards(base) == "https://api.openai.com/v1"
    assert live.check_guards({**base, "OPENAI_BASE_URL": "http://127.0.0.1:1/v1/"}) == "http://127.0.0.1:1/v1"
    both = {**base, "OPENAI_BASE_URL": "http://a:1/v1", "BRIDGE_BENCH_API_BASE": "http://b:2/v1"}
    assert live.check_guards(both) == "http://b:2/v1"
    with pytest.raises(live.ConfigError, match="CI"):
        live.check_guards({**base, "CI": "true"})
    assert live.check_guards({**base, "CI": "true"}, allow_ci=True) == "https://api.openai.com/v1"
