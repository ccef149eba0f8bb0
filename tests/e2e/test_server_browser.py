"""Real Chromium against ``bridge serve`` + ``bridge emulate``, inside a loopback-only network namespace.

The flows live in ``browser_flow.py`` (the plain ephemeral-key page), ``agents_flow.py``
(``bridge serve --agents``: offer to /api/call, agents on the server over the sideband, which follow the
page's reconnect), ``reconnect_flow.py`` (the page through a drop, a stall and a refused token) and
``renewal_flow.py`` (renewal before a short session cap, make-before-break; a text-only reply asked again,
spoken); each runs under
``ip netns exec`` so that the browser, the servers and every packet they exchange stay in a namespace
that has nothing but ``lo``. Set ``BRIDGE_SAVE_SCREENSHOT=1`` to refresh ``docs/screenshot-web.png`` and
``docs/screenshot-agents.png`` from the run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.netns, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return "Debian chromium is not installed (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    for tool in ("espeak-ng", "sox", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if importlib.util.find_spec("bridge.emulator.webrtc") is None:
        return "the emulator's WebRTC transport (bridge/emulator/webrtc.py) has not landed yet"
    return None


@pytest.fixture
def prereqs() -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def speech_wav(prereqs: None, tmp_path: Path) -> Path:
    """Fake-mic file: 1.5 s lead-in (the call is still connecting), a question, 2.5 s of silence (the
    reply starts), a second utterance that barges in on the reply, then silence. Played once (%noloop)."""
    utterances = [("Hello, what's the weather like today?", 1.5, 2.5), ("Wait, stop please.", 0, 6)]
    parts = []
    for i, (text, before, after) in enumerate(utterances):
        raw, part = tmp_path / f"raw{i}.wav", tmp_path / f"part{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), text], check=True)
        sox = ["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(part), "pad", str(before), str(after)]
        subprocess.run(sox, check=True)
        parts.append(str(part))
    wav = tmp_path / "speech_48k.wav"
    subprocess.run(["sox", *parts, str(wav)], check=True)
    return wav


@pytest.fixture
def netns(prereqs: None) -> Iterator[str]:
    name = f"bridge-e2e-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def silence_wav(prereqs: None, tmp_path: Path) -> Path:
    """Fake-mic file for the agents flow: silence (its turns are typed). Without a file Chromium's fake
    device beeps, which the emulator's VAD would take for speech."""
    wav = tmp_path / "silence_48k.wav"
    subprocess.run(["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(wav), "trim", "0", "30"], check=True)
    return wav


@pytest.fixture
def late_speech_wav(prereqs: None, tmp_path: Path) -> Path:
    """Fake-mic file for the renewal flow: 13.5 s of silence (the first session is renewed at ~9 s of its 12),
    one utterance, then silence: it can only reach the model through the renewed session's microphone."""
    raw, wav = tmp_path / "late_raw.wav", tmp_path / "late_speech_48k.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), "Can you hear me now?"], check=True)
    sox = ["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(wav), "pad", "13.5", "20"]
    subprocess.run(sox, check=True)
    return wav


def _run_flow(script: str, tmp_path: Path, wav: Path, netns: str, screenshot: Path, logs: tuple[str, ...]) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, str(Path(__file__).with_name(script)),
         "--work", str(tmp_path), "--wav", str(wav), "--screenshot", str(screenshot)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    tails = "\n".join(
        f"--- {name}\n{(tmp_path / name).read_text(errors='replace')[-4000:]}"
        for name in logs
        if (tmp_path / name).exists()
    )
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}\n{tails}"
    print("\n".join(line for line in proc.stdout.splitlines() if line.startswith(("step:", "measured:"))))
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("BRIDGE_SAVE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, ROOT / "docs" / screenshot.name)


def test_browser_flow(tmp_path: Path, speech_wav: Path, netns: str) -> None:
    screenshot = tmp_path / "screenshot-web.png"
    _run_flow("browser_flow.py", tmp_path, speech_wav, netns, screenshot, ("serve.out", "emulator.out"))


def test_browser_agents_through_the_sideband(tmp_path: Path, silence_wav: Path, netns: str) -> None:
    screenshot = tmp_path / "screenshot-agents.png"
    logs = ("agents-serve.out", "agents-emulator.out")
    _run_flow("agents_flow.py", tmp_path, silence_wav, netns, screenshot, logs)


def test_browser_reconnects_after_drop_and_stall(tmp_path: Path, silence_wav: Path, netns: str) -> None:
    screenshot = tmp_path / "screenshot-reconnect.png"
    logs = ("reconnect-serve.out", "reconnect-emulator.out")
    _run_flow("reconnect_flow.py", tmp_path, silence_wav, netns, screenshot, logs)


def test_browser_renews_before_the_cap_and_recovers_text_only_replies(
    tmp_path: Path, late_speech_wav: Path, netns: str
) -> None:
    screenshot = tmp_path / "screenshot-renewal.png"
    logs = ("renewal-serve.out", "renewal-emulator.out")
    _run_flow("renewal_flow.py", tmp_path, late_speech_wav, netns, screenshot, logs)
