"""``bridge serve`` as a fleet, measured on loopback (issue 20): mint throughput and latency, Redis round
trips per mint, and how long a call's agents are gone after ``kill -9`` of the replica running them.

Everything is a real process on 127.0.0.1: ``redis-server`` (Debian), ``bridge emulate`` (the upstream),
``bridge serve`` replicas; the load generator is this process (aiohttp). Load is bounded: a closed loop
of ``--concurrency`` requests for ``--seconds``, then an open loop at ``--rate`` requests/s.

- throughput: mints/s for 1 replica without Redis, 1 with, 3 with (requests spread round robin);
- latency: p50/p99 of a mint at a fixed offered load (open loop: a request every 1/rate s, not waiting);
- round trips: Redis requests per mint (``INFO commandstats``: EVALSHA and friends; the commands a script
  runs inside Redis are counted apart), and the CPU milliseconds one mint costs bridge serve and Redis
  (``/proc/<pid>/stat``: robust to a loaded machine, unlike mints/s);
- takeover: a call with agents on replica A (a real aiortc peer), ``kill -9`` A, time until another
  replica owns the call with its sideband attached (Redis record ``state=live``), over ``--trials``.

    python -m bridge.bench.fleet                       # everything, ~3 min
    python -m bridge.bench.fleet --skip-takeover --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "agents" / "korean" / "agents.toml"
API_KEY = "sk-bench-fleet-0000000000000000"
_URL = re.compile(r"open (http://127\.0\.0\.1:\d+)/ in a browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    e.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
    e.update(env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=e, stdout=out, stderr=subprocess.STDOUT)
    return Proc(name, proc, log)


def _wait_for(p: Proc, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = pattern.search(p.log.read_text(errors="replace"))
        if found:
            return found
        if p.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{p.name} did not start: {p.log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, int, int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench.fleet: redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    p = _spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                         "--dir", str(workdir)], workdir)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(8).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0", port, p.proc.pid
    finally:
        p.stop()


# Commands a client sends itself; everything else in these runs only ever runs inside our Lua scripts.
_TOP_LEVEL = re.compile(rb"^cmdstat_(evalsha|eval|ping|hello|client\|[a-z]+|script\|[a-z]+):calls=(\d+)", re.M)


def redis_commands(port: int) -> tuple[int, int]:
    """(round trips, all commands) from ``INFO commandstats``: a script's own commands count in Redis's
    totals but cost no round trip. This INFO is excluded."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"INFO commandstats\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n") or b"cmdstat_" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    total = sum(int(x) for x in re.findall(rb"^cmdstat_(?!info)[^:]+:calls=(\d+)", data, re.M))
    trips = sum(int(n) for _, n in _TOP_LEVEL.findall(data))
    return trips, total


@contextlib.contextmanager
def emulator(workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    p = _spawn("emulator", [sys.executable, "-m", "bridge", "emulate", "--host", "127.0.0.1", "--port", str(port),
                            "--think-ms", "20", "--api-keys", API_KEY], workdir)  # fmt: skip
    try:
        _wait_for(p, re.compile(r"listening on"))
        yield f"http://127.0.0.1:{port}/v1", p.proc.pid
    finally:
        p.stop()


def start_replicas(
    names: Sequence[str], workdir: Path, api_base: str, redis_url: str | None, extra: Sequence[str] = ()
) -> list[Proc]:
    procs = []
    for name in names:
        cmd = [sys.executable, "-m", "bridge", "serve", "--port", "0", "--api-base", api_base, "--replica-id", name,
               "--rate-burst", "1000000", "--rate-period", "0.001", "--token-burst", "1000000", "--token-period",
               "0.001", "--transcripts-dir", str(workdir / f"transcripts-{name}"), *extra]  # fmt: skip
        if redis_url is not None:
            cmd += ["--redis-url", redis_url]
        env = {"OPENAI_API_KEY": API_KEY, "BRIDGE_TRUST_FORWARDED": "1"}
        procs.append(_spawn(name, cmd, workdir, env))
    for p in procs:
        p.url = _wait_for(p, _URL).group(1)
    return procs


# ---- mint load ------------------------------------------------------------------------------------------


@dataclass
class MintRun:
    config: str
    replicas: int
    redis: bool
    mints_per_s: float = 0.0
    errors: int = 0
    offered_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    redis_round_trips_per_mint: float | None = None
    redis_commands_per_mint: float | None = None  # inside the script included
    statuses: dict[int, int] = field(default_factory=dict)  # 0 = no answer
    cpu_ms_per_mint: float = 0.0  # bridge serve (all replicas) or, for the floor, the upstream
    redis_cpu_ms_per_mint: float | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)


async def _mint(http: aiohttp.ClientSession, url: str, n: int, statuses: Counter[int]) -> tuple[bool, float]:
    """One mint at ``url`` (a replica's ``/api/client-secret``, or the upstream's own endpoint)."""
    headers = {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
    if url.endswith("/realtime/client_secrets"):
        headers["Authorization"] = f"Bearer {API_KEY}"
    t0 = time.perf_counter()
    try:
        async with http.post(url, json={}, headers=headers) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    statuses[status] += 1
    return status == 200, (time.perf_counter() - t0) * 1000


async def closed_loop(
    urls: list[str], concurrency: int, seconds: float, statuses: Counter[int]
) -> tuple[int, int, float]:
    """``concurrency`` workers minting back to back for ``seconds``; (ok, errors, elapsed)."""
    counter = [0, 0, 0]
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            while time.monotonic() < stop:
                n = counter[2]
                counter[2] += 1
                ok, _ = await _mint(http, urls[n % len(urls)], n, statuses)
                counter[0 if ok else 1] += 1

        t0 = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        return counter[0], counter[1], time.monotonic() - t0


async def open_loop(urls: list[str], rate: float, seconds: float, statuses: Counter[int]) -> tuple[list[float], int]:
    """One request every 1/rate s whatever the answers do; latencies of the successful ones."""
    latencies: list[float] = []
    errors = [0]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(n: int) -> None:
            ok, ms = await _mint(http, urls[n % len(urls)], 1_000_000 + n, statuses)
            if ok:
                latencies.append(ms)
            else:
                errors[0] += 1

        t0 = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for n in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
                tg.create_task(one(n))
    return latencies, errors[0]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes so far (``/proc/<pid>/stat``)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
    return total / os.sysconf("SC_CLK_TCK")


async def mint_bench(args: argparse.Namespace, workdir: Path, api_base: str, emulator_pid: int) -> list[MintRun]:
    """All three configurations run side by side (idle when not measured) and are measured in turns,
    ``--rounds`` times, so drift in the machine's load hits them alike; the median round is reported."""
    configs = (("1 replica, memory", 1, False), ("1 replica, Redis", 1, True), ("3 replicas, Redis", 3, True))
    with contextlib.ExitStack() as stack:
        # The upstream alone (the emulator's own mint endpoint): the floor every configuration stands on.
        setups = [(MintRun("upstream alone (no bridge serve)", 0, False), [f"{api_base}/realtime/client_secrets"], 0)]
        pids: dict[str, tuple[list[int], list[int]]] = {setups[0][0].config: ([emulator_pid], [])}
        for k, (config, count, with_redis) in enumerate(configs):
            redis_url, port, redis_pid = stack.enter_context(redis_server(workdir)) if with_redis else (None, 0, 0)
            names = [f"m{k}{i}" for i in range(count)]
            procs = await asyncio.to_thread(start_replicas, names, workdir, api_base, redis_url)
            for p in procs:
                stack.callback(p.stop)
            setups.append((MintRun(config, count, with_redis), [f"{p.url}/api/client-secret" for p in procs], port))
            pids[config] = ([p.proc.pid for p in procs], [redis_pid] if with_redis else [])
        statuses: dict[str, Counter[int]] = {run.config: Counter() for run, _, _ in setups}
        for _run, urls, _ in setups:
            await closed_loop(urls, args.concurrency, 1.0, Counter())  # warm-up: connections, script cache
        rates: dict[str, list[float]] = {run.config: [] for run, _, _ in setups}
        cpu_ms: dict[str, list[tuple[float, float]]] = {run.config: [] for run, _, _ in setups}
        for _ in range(args.rounds):
            for run, urls, _ in setups:
                serve, store = pids[run.config]
                c0 = (cpu_seconds(serve), cpu_seconds(store))
                ok, errors, elapsed = await closed_loop(urls, args.concurrency, args.seconds, statuses[run.config])
                rates[run.config].append(ok / elapsed)
                cpu_ms[run.config].append(
                    ((cpu_seconds(serve) - c0[0]) * 1000 / max(1, ok), (cpu_seconds(store) - c0[1]) * 1000 / max(1, ok))
                )
                run.errors += errors
        for _ in range(args.rounds):
            for run, urls, port in setups:
                before = redis_commands(port) if run.redis else (0, 0)
                latencies, errors = await open_loop(urls, args.rate, args.seconds, statuses[run.config])
                if run.redis:
                    after, n = redis_commands(port), int(args.rate * args.seconds)  # every request, refused or not
                    run.redis_round_trips_per_mint = (after[0] - before[0]) / n
                    run.redis_commands_per_mint = (after[1] - before[1]) / n
                run.errors += errors
                run.latencies_ms += latencies
        runs = []
        for run, _, _ in setups:
            run.mints_per_s = statistics.median(rates[run.config])
            run.offered_per_s = args.rate
            run.statuses = dict(statuses[run.config])
            run.cpu_ms_per_mint = statistics.median(c for c, _ in cpu_ms[run.config])
            run.redis_cpu_ms_per_mint = statistics.median(r for _, r in cpu_ms[run.config]) if run.redis else None
            run.p50_ms, run.p99_ms = percentile(run.latencies_ms, 0.5), percentile(run.latencies_ms, 0.99)
            runs.append(run)
            print(f"  {run.config}: {run.mints_per_s:.0f} mints/s (rounds: "
                  f"{', '.join(f'{r:.0f}' for r in rates[run.config])}); at {args.rate:.0f}/s p50 {run.p50_ms:.1f} ms "
                  f"p99 {run.p99_ms:.1f} ms; CPU {run.cpu_ms_per_mint:.2f} ms/mint (Redis "
                  f"{run.redis_cpu_ms_per_mint or 0:.3f}); {run.redis_round_trips_per_mint or 0:.2f} Redis round trips "
                  f"per mint "
                  f"({run.redis_commands_per_mint or 0:.1f} commands); HTTP {run.statuses}", flush=True)  # fmt: skip
    return runs


# ---- takeover -------------------------------------------------------------------------------------------


@dataclass
class Takeover:
    ttl: float
    from_kill_s: list[float] = field(default_factory=list)
    from_heartbeat_s: list[float] = field(default_factory=list)
    failures: int = 0


@contextlib.asynccontextmanager
async def browser_call(http: aiohttp.ClientSession, url: str) -> AsyncIterator[str]:
    """A call with agents created through ``url`` by a real aiortc peer; yields its call id."""
    from aiortc import AudioStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        channel = pc.createDataChannel("oai-events")
        pc.addTrack(AudioStreamTrack())  # a browser's microphone, silent
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        async with http.post(f"{url}/api/call", data=pc.localDescription.sdp, headers=headers) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"call creation: HTTP {resp.status} {answer[:200]}")
            call_id = resp.headers["X-Call-Id"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        opened = asyncio.Event()
        channel.on("open", opened.set)
        if channel.readyState == "open":
            opened.set()
        await asyncio.wait_for(opened.wait(), 10)
        yield call_id
    finally:
        await pc.close()


async def takeover_bench(args: argparse.Namespace, workdir: Path, api_base: str) -> Takeover:
    import redis.asyncio as aioredis

    from bridge.rtc.loopback import loopback_candidates

    result = Takeover(args.ttl)
    extra = ["--agents", str(AGENTS), "--call-ttl", str(args.ttl), "--max-calls", "1000"]
    with redis_server(workdir) as (redis_url, _, _), loopback_candidates():
        db = aioredis.Redis.from_url(redis_url, decode_responses=True)
        replicas = await asyncio.to_thread(start_replicas, ["t0", "t1"], workdir, api_base, redis_url, extra)
        serial = 2
        try:
            async with aiohttp.ClientSession() as http:
                for trial in range(args.trials):
                    victim, survivor = replicas
                    async with browser_call(http, victim.url) as call_id:
                        key = f"bridge:call:{call_id}"
                        await asyncio.sleep(args.ttl / 2)  # mid-life: some heartbeats behind it
                        last_beat = int((await db.hgetall(key))["heartbeat"])
                        victim.proc.send_signal(signal.SIGKILL)
                        t_kill, kill_ms = time.monotonic(), _redis_ms(await db.time())
                        record: dict[str, str] = {}
                        while not (record.get("owner") == survivor.name and record.get("state") == "live"):
                            if time.monotonic() - t_kill > 3 * args.ttl + 10:
                                break
                            record = {str(k): str(v) for k, v in (await db.hgetall(key)).items()}
                            await asyncio.sleep(0.002)
                        if record.get("state") == "live" and record.get("owner") == survivor.name:
                            attached = int(record["attached"])
                            result.from_kill_s.append((attached - kill_ms) / 1000)
                            result.from_heartbeat_s.append((attached - last_beat) / 1000)
                        else:
                            result.failures += 1
                        async with http.post(f"{survivor.url}/api/call/{call_id}/hangup") as resp:
                            await resp.read()
                    await asyncio.to_thread(victim.proc.wait, 10)
                    (fresh,) = await asyncio.to_thread(
                        start_replicas, [f"t{serial}"], workdir, api_base, redis_url, extra
                    )
                    serial += 1
                    replicas = [survivor, fresh]
                    done = result.from_kill_s[-1] if result.from_kill_s else float("nan")
                    print(f"  trial {trial + 1}/{args.trials}: taken over {done:.3f} s after kill -9", flush=True)
        finally:
            for p in replicas:
                p.stop()
            await db.aclose()
    return result


def _redis_ms(t: tuple[int, int]) -> int:
    return int(t[0]) * 1000 + int(t[1]) // 1000


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "redis": next((w.split("=")[1] for w in redis_v if w.startswith("v=")), "?"),
        "commit": commit.stdout.strip(),
        "load": os.getloadavg(),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(tmp)
        out: dict[str, Any] = {"machine": machine(), "args": vars(args)}
        with emulator(workdir) as (api_base, emulator_pid):
            if not args.skip_mints:
                print("mints:", flush=True)
                runs = await mint_bench(args, workdir, api_base, emulator_pid)
                out["mints"] = [asdict(r) | {"latencies_ms": None} for r in runs]
            if not args.skip_takeover:
                print(f"takeover after kill -9 (ttl {args.ttl} s):", flush=True)
                t = await takeover_bench(args, workdir, api_base)
                out["takeover"] = asdict(t) | {
                    "p50_from_kill_s": percentile(t.from_kill_s, 0.5),
                    "p95_from_kill_s": percentile(t.from_kill_s, 0.95),
                    "max_from_kill_s": max(t.from_kill_s, default=float("nan")),
                    "p50_from_heartbeat_s": percentile(t.from_heartbeat_s, 0.5),
                    "p95_from_heartbeat_s": percentile(t.from_heartbeat_s, 0.95),
                }
                print(
                    f"  p50 {out['takeover']['p50_from_kill_s']:.3f} s, p95 {out['takeover']['p95_from_kill_s']:.3f} s"
                    f" after kill -9 ({statistics.mean(t.from_kill_s or [float('nan')]):.3f} mean); from the last "
                    f"heartbeat p50 {out['takeover']['p50_from_heartbeat_s']:.3f} s; {t.failures} failures",
                    flush=True,
                )
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.fleet", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="per closed/open loop (default 10)")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop requests in flight (default 32)")
    p.add_argument("--rate", type=float, default=50.0, help="open-loop offered mints/s (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the mint configurations (default 3)")
    p.add_argument("--trials", type=int, default=20, help="takeover trials (default 20)")
    p.add_argument("--ttl", type=float, default=2.0, help="--call-ttl of the takeover replicas (default 2 s)")
    p.add_argument("--skip-mints", action="store_true")
    p.add_argument("--skip-takeover", action="store_true")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    args = p.parse_args(argv)
    out = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
