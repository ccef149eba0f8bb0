"""``bridge serve`` as a user runs it: no API key -> the built-in emulator, a banner, the URL, a mint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _read_line(proc: subprocess.Popen[str], pattern: str, deadline: float) -> re.Match[str]:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"bridge serve exited ({proc.poll()}): {proc.stderr.read() if proc.stderr else ''}")
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no line matching {pattern!r}")


def test_serve_offline_mints_at_the_builtin_emulator(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--port", "0", "--key-ttl", "20"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        banner = _read_line(proc, r"built-in emulator, (http://127\.0\.0\.1:\d+/v1)", deadline)
        url = _read_line(proc, r"open (http://127\.0\.0\.1:\d+/) in a browser", deadline).group(1)
        page = urllib.request.urlopen(url, timeout=5)
        assert page.status == 200 and b'type="module"' in page.read()
        req = urllib.request.Request(f"{url}api/client-secret", data=b"{}", method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["value"].startswith("ek_")
        assert banner.group(1).startswith("http://127.0.0.1:")
        assert body["calls_url"] == f"{url}api/calls"  # the in-process emulator is reached via the relay
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
