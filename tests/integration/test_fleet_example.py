"""``examples/fleet/run.sh`` as documented in docs/web.md: Redis, a shared emulator, three replicas and
Debian's HAProxy on loopback ports. Requests through the proxy spread over the replicas, /metrics is not
exposed, a replica stopped with SIGTERM costs no failed request, and stopping the script stops all."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.redis_server import REDIS_SERVER, free_port

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "examples" / "fleet" / "run.sh"
pytestmark = pytest.mark.timeout(120)


def request(url: str, method: str = "GET") -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body.startswith(b"{") else {}


def test_example_fleet_behind_haproxy(tmp_path: Path) -> None:
    if not shutil.which("haproxy") or not Path(REDIS_SERVER).exists():
        pytest.skip("haproxy and redis-server are needed (scripts/setup.sh installs both)")
    ports = {name: free_port() for name in ("FLEET_PORT", "FLEET_REDIS_PORT", "FLEET_EMULATOR_PORT")}
    base = free_port()  # the replicas take base+1..base+3; collisions are unlikely on loopback
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    env.update({k: str(v) for k, v in ports.items()})
    env.update({"FLEET_REPLICA_BASE": str(base), "FLEET_DIR": str(tmp_path), "PYTHON": sys.executable,
                "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})  # fmt: skip
    out = (tmp_path / "run.out").open("w+")
    proc = subprocess.Popen(["bash", str(RUN), "--rate-burst", "100"], env=env, stdout=out, stderr=subprocess.STDOUT)
    proxy = f"http://127.0.0.1:{ports['FLEET_PORT']}"
    try:
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while len(seen) < 3:  # HAProxy marks a replica up once its /healthz answers 200
            assert proc.poll() is None, (tmp_path / "run.out").read_text()
            assert time.monotonic() < deadline, f"replicas seen through the proxy: {seen}"
            try:
                status, body = request(f"{proxy}/healthz")
                if status == 200:
                    seen.add(str(body["replica"]))
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        assert seen == {"r1", "r2", "r3"}
        assert request(f"{proxy}/metrics")[0] == 404
        status, body = request(f"{proxy}/api/client-secret", "POST")
        assert status == 200 and str(body["value"]).startswith("ek_"), body

        pids = dict(re.findall(r"replica (r\d) pid (\d+)", (tmp_path / "run.out").read_text()))
        os.kill(int(pids["r2"]), signal.SIGTERM)
        statuses = [request(f"{proxy}/api/client-secret", "POST")[0] for _ in range(30)]
        assert statuses == [200] * 30  # the stopped replica's refused connections are retried elsewhere
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
    text = (tmp_path / "run.out").read_text()
    for pid in re.findall(r"pid (\d+)", text):
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), text
