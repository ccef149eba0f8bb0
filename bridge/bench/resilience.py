"""The resilience bench: what ``bridge run`` does on reconnects, measured (``python -m bridge.bench.resilience``).

Each run is a real ``bridge run`` process (bridge.bench.procs, ``.wav`` microphone saying a short turn every
~1.8 s, ``--output null``) against the emulator (:mod:`bridge.bench.resilience_emu`: think 50 ms, 0.5 s
replies), with faults injected through the emulator's command pipe. With root and ``ip netns`` both sit
in the lab's namespaces behind the impairing forwarder (bridge.bench.netem; ``clean`` and ``lossy`` from
bridge.bench.profiles); without, only ``clean`` runs, on 127.0.0.1.

1. **Reconnect** (per transport x profile): ``--drops`` drops, then ``--stalls`` silent deaths (on the
   ``--stall-profiles``). Per fault, from the transcript's ``reconnect`` line: detection = ``detected_unix``
   minus the injection time; reconnect = ``downtime_ms`` (drop noticed -> new session told the conversation
   and holding the microphone, i.e. a reply's audio is possible); outage = both.
2. **Mixed faults** (per transport, ``--fault-profiles``): ``--faults`` faults of every kind in one run
   (drop, stall, close 1001/1011, error session_expired, expire, refuse 500/429 for 1 s, restart), with
   ``--replay items`` and the emulator quoting the earlier user turn: every transcript line valid and in
   order, every user turn committed before a fault in the transcript, the first reply after each reconnect
   quoting a turn from before it, the process alive throughout and exiting 0 after SIGTERM.
3. **Renewal** (per transport, ``--renewal-profiles``): sessions capped at ``--session-cap`` s until
   ``--renewals`` renewals; ``response_ms`` of the first turn after each renewal vs the other turns.

Results: Markdown tables on stdout, the whole document as JSON in ``--out``; raw files in ``--dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bridge.bench import signals
from bridge.bench.lab import LocalNet
from bridge.bench.metrics import summary
from bridge.bench.netem import Topology, netns_unavailable_reason
from bridge.bench.profiles import Profile, parse_profiles
from bridge.bench.resilience_checks import (
    committed_user_items,
    context_after,
    lost_user_turns,
    read_lines,
    validate_transcript,
)
from bridge.errors import BridgeError, ConfigError

TRANSPORTS = ("webrtc", "ws")
EMULATOR = {"think_ms": 50, "reply_seconds": 0.5}
TONES_S = (0.45, 0.55, 0.65, 0.75)  # turn lengths cycle, so the quoted turns' transcripts differ
GAP_S = 1.3  # silence after each turn: the 0.5 s reply ends ~1.05 s after the turn, before the next one
RENEWAL_GAP_S = 2.4  # renewal waits for 0.5 s of quiet after the reply: give it ~1.3 s each turn
RECONNECT_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 15.0
START_TIMEOUT_S = 30.0
REFUSE_S = 1.0
# the mixed run's faults: (label, kind, fields); "refuse" is followed by a drop
MIXED: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("drop", "drop", {}),
    ("stall", "stall", {}),
    ("close 1001", "close", {"code": 1001}),
    ("close 1011", "close", {"code": 1011}),
    (
        "error session_expired",
        "error",
        {
            "code": "session_expired",
            "error_type": "invalid_request_error",
            "message": "Your session hit the maximum duration of 60 minutes.",
        },
    ),
    ("expire", "expire", {}),
    ("refuse 500 1 s", "refuse", {"status": 500, "seconds": REFUSE_S}),
    ("refuse 429 1 s", "refuse", {"status": 429, "seconds": REFUSE_S}),
    ("restart", "restart", {}),
)


@dataclass(frozen=True)
class Settings:
    transports: list[str]
    profiles: list[Profile]
    drops: int = 20
    stalls: int = 20
    faults: int = 100
    renewals: int = 5
    session_cap_s: float = 15.0
    stall_profiles: tuple[str, ...] = ("clean",)
    fault_profiles: tuple[str, ...] = ("clean",)
    renewal_profiles: tuple[str, ...] = ("clean",)
    jobs: int = 1  # runs of different transports at once
    seed: int = 1
    out_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bridge-resilience-")))


@dataclass
class Fault:
    """One injected fault and what the transcript's ``reconnect`` line says about it."""

    label: str
    injected_unix: float
    reachable_unix: float  # when the service took new sessions again (refuse: its end)
    line: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "injected_unix": round(self.injected_unix, 3)}
        if self.line is None:
            return {**d, "reconnected": False}
        detected = float(self.line["detected_unix"])
        back = detected + float(self.line["downtime_ms"]) / 1000
        return {
            **d,
            "reconnected": True,
            "reason": self.line["reason"],
            "attempts": self.line["attempts"],
            "detection_ms": round((detected - self.injected_unix) * 1000, 1),
            "reconnect_ms": float(self.line["downtime_ms"]),
            "outage_ms": round((back - self.injected_unix) * 1000, 1),
            "after_reachable_ms": round((back - max(self.reachable_unix, detected)) * 1000, 1),
        }


# ---- the processes ------------------------------------------------------------------------------------


class Emulator:
    """A :mod:`bridge.bench.resilience_emu` process on the server side of ``net``."""

    def __init__(self, proc: asyncio.subprocess.Process, base_url: str, api_key: str, log_path: Path) -> None:
        self.proc, self.base_url, self.api_key, self.log_path = proc, base_url, api_key, log_path
        self._lock = asyncio.Lock()

    async def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            await self.proc.stdin.drain()
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 10))
        if "error" in reply:
            raise BridgeError(f"emulator: {reply['error']}")
        return reply

    async def inject(self, kind: str, **fields: Any) -> float:
        """Apply a fault now; returns the unix time it was applied."""
        if kind == "restart":
            return float((await self.call({"op": "restart"}))["t"])
        return float((await self.call({"op": "inject", "fault": {"kind": kind, **fields}}))["t"])


def _log_file(path: Path) -> BinaryIO:
    """A process's output file (handed to the child, closed here once it has started)."""
    return open(path, "wb")


@contextlib.asynccontextmanager
async def emulator(net: Any, d: Path, **config: Any) -> AsyncIterator[Emulator]:
    log_path = d / "emulator.jsonl"
    argv = [sys.executable, "-m", "bridge.bench.resilience_emu", "--host", net.server_addr]
    argv += ["--config", json.dumps({**EMULATOR, **config}), "--log", str(log_path)]
    with _log_file(d / "emulator.stderr") as err:
        proc = await asyncio.create_subprocess_exec(
            *net.exec_argv("srv", argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        if not line.startswith(b"{"):
            raise BridgeError(f"the emulator did not start (see {d / 'emulator.stderr'})")
        ready = json.loads(line)
        yield Emulator(proc, ready["base_url"], ready["api_key"], log_path)
    finally:
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def turns_wav(path: Path, seconds: float, gap_s: float) -> None:
    """The microphone: 0.5 s of silence, then turns of :data:`TONES_S` each followed by ``gap_s``."""
    bursts, t, i = [], 0.5, 0
    while t + TONES_S[-1] + gap_s < seconds:
        bursts.append((t, t + TONES_S[i % len(TONES_S)]))
        t = bursts[-1][1] + gap_s
        i += 1
    signals.write_wav(path, signals.render(bursts, seconds).audio)


class Client:
    """One ``bridge run`` process and its transcript, read as it grows."""

    def __init__(self, proc: asyncio.subprocess.Process, transcript: Path) -> None:
        self.proc, self.path = proc, transcript
        self.lines: list[dict[str, Any]] = []
        self._pos = 0
        self._rest = b""

    def poll(self) -> list[dict[str, Any]]:
        if self.path.is_file():
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
            self._pos += len(data)
            *done, self._rest = (self._rest + data).split(b"\n")
            for raw in done:
                with contextlib.suppress(json.JSONDecodeError):
                    self.lines.append(json.loads(raw))
        return self.lines

    def count(self, kind: str, pred: Callable[[dict[str, Any]], bool] = lambda _: True) -> int:
        return sum(1 for x in self.poll() if x.get("kind") == kind and pred(x))

    def alive(self) -> bool:
        return self.proc.returncode is None

    async def until(self, pred: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if not self.alive():
                raise BridgeError(f"bridge run ended (exit {self.proc.returncode}) while waiting for {what}")
            if time.monotonic() > deadline:
                raise BridgeError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.01)

    async def reply_after_last_reconnect(self) -> None:
        """Until an assistant line follows the last ``reconnect`` line (or the start)."""

        def ok() -> bool:
            lines = self.poll()
            last = max((i for i, x in enumerate(lines) if x.get("kind") == "reconnect"), default=-1)
            return any(x.get("kind") == "assistant" for x in lines[last + 1 :])

        await self.until(ok, "a reply", REPLY_TIMEOUT_S)

    async def fault(self, emu: Emulator, label: str, kind: str, **fields: Any) -> Fault:
        """Inject one fault and wait for the reconnect it causes."""
        n = self.count("reconnect")
        reachable = 0.0
        if kind == "refuse":
            t0 = await emu.inject(kind, **fields)
            reachable = t0 + float(fields["seconds"])
            kind, fields = "drop", {}
        t = await emu.inject(kind, **fields)
        fault = Fault(label, t, max(reachable, t))
        await self.until(lambda: self.count("reconnect") > n, f"the reconnect after {label}", RECONNECT_TIMEOUT_S)
        fault.line = [x for x in self.lines if x.get("kind") == "reconnect"][n]
        return fault


@contextlib.asynccontextmanager
async def bridge_run(
    net: Any, emu: Emulator, transport: str, d: Path, seconds: float, *flags: str, gap_s: float = GAP_S
) -> AsyncIterator[Client]:
    """``bridge run`` for at most ``seconds``; stopped with SIGTERM when the block ends (see :func:`stop`)."""
    wav, transcript = d / "in.wav", d / "t.jsonl"
    turns_wav(wav, seconds + 5, gap_s)
    transcript.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bridge.bench.procs", "run", "--transport", transport, "--input", str(wav)]
    argv += ["--output", "null", "--transcript", str(transcript), "--api-base", emu.base_url]
    argv += ["--duration", f"{seconds:.0f}", "--reconnect-for", "60", *flags]
    if net.loopback:
        argv.append("--loopback-ice")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    env["OPENAI_API_KEY"] = emu.api_key
    with _log_file(d / "bridge.stdout") as out, _log_file(d / "bridge.stderr") as err:
        proc = await asyncio.create_subprocess_exec(*net.exec_argv("cli", argv), env=env, stdout=out, stderr=err)
    client = Client(proc, transcript)
    try:
        yield client
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def stderr_tail(d: Path) -> str:
    lines = (d / "bridge.stderr").read_text(errors="replace").strip().splitlines()
    return lines[-1][:300] if lines else ""


def run_end(client: Client, d: Path, alive_at_end: bool) -> dict[str, Any]:
    """Crash and transcript checks common to every run."""
    lines = read_lines(client.path)
    stats: dict[str, Any] = next((x for x in reversed(lines) if x.get("kind") == "stats"), {})
    return {
        "alive_until_stopped": alive_at_end,
        "exit_code": client.proc.returncode,
        "internal_errors": stats.get("internal_errors"),
        "stats_reconnects": stats.get("reconnects"),
        "stats_renewals": stats.get("renewals"),
        "transcript": validate_transcript(client.path),
        "stderr_tail": stderr_tail(d) if client.proc.returncode != 0 else "",
    }


# ---- the three measurements -------------------------------------------------------------------------


def fault_summary(faults: list[Fault]) -> dict[str, Any]:
    ds = [f.to_dict() for f in faults]
    ok = [x for x in ds if x["reconnected"]]
    return {
        "injected": len(ds),
        "reconnected": len(ok),
        "detection_ms": summary([x["detection_ms"] for x in ok]),
        "reconnect_ms": summary([x["reconnect_ms"] for x in ok]),
        "outage_ms": summary([x["outage_ms"] for x in ok]),
        "after_reachable_ms": summary([x["after_reachable_ms"] for x in ok]),
        "reasons": sorted({str(x["reason"]) for x in ok}),
        "attempts_max": max((int(x["attempts"]) for x in ok), default=0),
    }


async def reconnect_run(net: Any, s: Settings, transport: str, profile: Profile, rng: random.Random) -> dict[str, Any]:
    d = s.out_dir / profile.name / transport / "reconnect"
    d.mkdir(parents=True, exist_ok=True)
    stalls = s.stalls if profile.name in s.stall_profiles else 0
    out: dict[str, Any] = {"transport": transport, "profile": profile.name, "dir": str(d), "errors": []}
    drops: list[Fault] = []
    stalled: list[Fault] = []
    alive = False
    async with emulator(net, d) as emu:
        seconds = 20 + s.drops * 4 + stalls * 7
        async with bridge_run(net, emu, transport, d, seconds) as client:
            try:
                await client.reply_after_last_reconnect()
                for _ in range(s.drops):
                    await asyncio.sleep(rng.uniform(0.3, 1.5))  # at a random moment of a turn
                    drops.append(await client.fault(emu, "drop", "drop"))
                for _ in range(stalls):
                    await asyncio.sleep(rng.uniform(0.3, 1.5))
                    stalled.append(await client.fault(emu, "stall", "stall"))
            except BridgeError as exc:
                out["errors"].append(str(exc))
            alive = client.alive()
    out.update(run_end(client, d, alive))
    out["drop"] = fault_summary(drops)
    out["stall"] = fault_summary(stalled) if stalls else None
    out["raw"] = {"drop": [f.to_dict() for f in drops], "stall": [f.to_dict() for f in stalled]}
    return out


async def mixed_run(net: Any, s: Settings, transport: str, profile: Profile, rng: random.Random) -> dict[str, Any]:
    d = s.out_dir / profile.name / transport / "mixed"
    d.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, str, dict[str, Any]]] = []
    while len(plan) < s.faults:  # every kind once per round, in a random order
        plan += rng.sample(MIXED, len(MIXED))
    plan = plan[: s.faults]
    out: dict[str, Any] = {"transport": transport, "profile": profile.name, "dir": str(d), "errors": []}
    faults: list[Fault] = []
    alive = False
    async with emulator(net, d, quote_context=True) as emu:
        async with bridge_run(net, emu, transport, d, 30 + s.faults * 8, "--replay", "items") as client:
            try:
                for label, kind, fields in plan:
                    await client.reply_after_last_reconnect()  # the conversation goes on: a reply came
                    await asyncio.sleep(rng.uniform(0.0, 1.0))
                    faults.append(await client.fault(emu, label, kind, **fields))
                await client.reply_after_last_reconnect()
            except BridgeError as exc:
                out["errors"].append(str(exc))
            alive = client.alive()
    out.update(run_end(client, d, alive))
    lines = read_lines(client.path)
    out["faults"] = fault_summary(faults)
    out["by_kind"] = {label: fault_summary([f for f in faults if f.label == label]) for label, _, _ in MIXED}
    out["lost_user_turns"] = lost_user_turns(
        committed_user_items(emu.log_path), [f.injected_unix for f in faults], lines
    )
    out["context"] = context_after(lines)
    out["raw"] = [f.to_dict() for f in faults]
    return out


async def renewal_run(net: Any, s: Settings, transport: str, profile: Profile) -> dict[str, Any]:
    d = s.out_dir / profile.name / transport / "renewal"
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"transport": transport, "profile": profile.name, "dir": str(d), "errors": []}
    alive = False
    cap = s.session_cap_s
    async with emulator(net, d, session_max_seconds=cap) as emu:
        seconds = 20 + (s.renewals + 1) * cap * 1.5
        async with bridge_run(net, emu, transport, d, seconds, gap_s=RENEWAL_GAP_S) as client:
            try:
                renewal = lambda x: x.get("reason") == "renewal"  # noqa: E731
                await client.until(lambda: client.count("reconnect", renewal) >= s.renewals, "renewals", seconds)
                n = client.count("latency", lambda x: "response_ms" in x)
                await client.until(lambda: client.count("latency", lambda x: "response_ms" in x) > n, "a turn", 15)
            except BridgeError as exc:
                out["errors"].append(str(exc))
            alive = client.alive()
    out.update(run_end(client, d, alive))
    lines = read_lines(client.path)
    after: list[float] = []
    other: list[float] = []
    pending = False
    for x in lines:
        if x.get("kind") == "reconnect":
            pending = x.get("reason") == "renewal"
        elif x.get("kind") == "latency" and "response_ms" in x:
            (after if pending else other).append(float(x["response_ms"]))
            pending = False
    reconnects = [x for x in lines if x.get("kind") == "reconnect"]
    out["renewals"] = sum(1 for x in reconnects if x.get("reason") == "renewal")
    out["other_reconnects"] = sorted({str(x.get("reason")) for x in reconnects if x.get("reason") != "renewal"})
    out["renewal_downtime_ms"] = sorted({float(x["downtime_ms"]) for x in reconnects if x.get("reason") == "renewal"})
    out["expired_errors"] = sum(1 for x in lines if x.get("kind") == "error" and x.get("code") == "session_expired")
    out["response_after_renewal_ms"] = summary(after)
    out["response_other_ms"] = summary(other)
    out["raw"] = {"after": after, "other": other}
    return out


# ---- orchestration ------------------------------------------------------------------------------------


def open_net(s: Settings, notes: list[str]) -> Any:
    reason = netns_unavailable_reason()
    if reason is None:
        topo = Topology(s.profiles[0])
        topo.open()
        return topo
    if any(p.impaired for p in s.profiles):
        notes.append(f"only the clean profile ran, on 127.0.0.1: {reason}")
    return LocalNet()


async def run_all(s: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    notes: list[str] = []
    doc: dict[str, Any] = {"reconnect": [], "mixed": [], "renewal": [], "notes": notes}
    net = open_net(s, notes)
    rng = random.Random(s.seed)
    sem = asyncio.Semaphore(max(1, s.jobs))
    try:
        for profile in s.profiles:
            if isinstance(net, LocalNet) and profile.impaired:
                continue
            net.set_profile(profile)
            doc.setdefault("network", {})[profile.name] = "namespaces" if not net.loopback else "127.0.0.1"

            async def transport_runs(t: str, profile: Profile = profile) -> None:
                async with sem:
                    r = random.Random(rng.random())
                    if s.drops or (s.stalls and profile.name in s.stall_profiles):
                        progress(f"resilience: {profile.name} / {t}: {s.drops} drops, stalls")
                        doc["reconnect"].append(await reconnect_run(net, s, t, profile, r))
                    if s.faults and profile.name in s.fault_profiles:
                        progress(f"resilience: {profile.name} / {t}: {s.faults} mixed faults")
                        doc["mixed"].append(await mixed_run(net, s, t, profile, r))
                    if s.renewals and profile.name in s.renewal_profiles:
                        progress(f"resilience: {profile.name} / {t}: {s.renewals} renewals")
                        doc["renewal"].append(await renewal_run(net, s, t, profile))

            await asyncio.gather(*(transport_runs(t) for t in s.transports))
    finally:
        net.close()
    return doc


def machine() -> dict[str, Any]:
    def git(*a: str) -> str:
        p = subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent)
        return p.stdout.strip()

    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# ---- report -------------------------------------------------------------------------------------------


def _p(d: dict[str, Any] | None, key: str = "p50") -> str:
    return "-" if not d or d.get(key) is None else f"{d[key]:.0f}"


def tables(doc: dict[str, Any]) -> str:
    out = ["### Reconnect (detection: fault injected -> noticed; reconnect: noticed -> new session told and live)"]
    out.append("")
    out.append(
        "| profile | transport | fault | n | detection p50 / p95 ms | reconnect p50 / p95 / max ms "
        "| outage p95 ms | attempts max |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for r in doc["reconnect"]:
        for kind in ("drop", "stall"):
            f = r.get(kind)
            if not f or not f["injected"]:
                continue
            out.append(
                f"| {r['profile']} | {r['transport']} | {kind} | {f['reconnected']}/{f['injected']} "
                f"| {_p(f['detection_ms'])} / {_p(f['detection_ms'], 'p95')} "
                f"| {_p(f['reconnect_ms'])} / {_p(f['reconnect_ms'], 'p95')} / {_p(f['reconnect_ms'], 'max')} "
                f"| {_p(f['outage_ms'], 'p95')} | {f['attempts_max']} |"
            )
    if doc["mixed"]:
        out += ["", "### Mixed faults in one run", ""]
        out.append(
            "| profile | transport | faults reconnected | transcript lines (bad) | user turns lost / checked "
            "| context after reconnect | alive, exit | internal errors |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for r in doc["mixed"]:
            tr, lost, ctx = r["transcript"], r["lost_user_turns"], r["context"]
            bad = tr["invalid"] + tr["unknown_kind"] + tr["out_of_order"] + tr["duplicates"]
            out.append(
                f"| {r['profile']} | {r['transport']} | {r['faults']['reconnected']}/{r['faults']['injected']} "
                f"| {tr['lines']} ({bad}) | {lost['missing']} / {lost['checked']} "
                f"| {ctx['present']}/{ctx['reconnects'] - ctx['interrupted']} quote an earlier turn "
                f"({ctx['latest']} the latest), {ctx['interrupted']} cut short by the next turn "
                f"| {'yes' if r['alive_until_stopped'] else 'NO'}, {r['exit_code']} | {r['internal_errors']} |"
            )
        out += [
            "",
            "| transport | fault | n | detection p50 / p95 ms | reconnect p50 / p95 ms | after reachable p95 ms |",
        ]
        out.append("|---|---|---|---|---|---|")
        for r in doc["mixed"]:
            for label, f in r["by_kind"].items():
                if f["injected"]:
                    out.append(
                        f"| {r['transport']} | {label} | {f['reconnected']}/{f['injected']} "
                        f"| {_p(f['detection_ms'])} / {_p(f['detection_ms'], 'p95')} "
                        f"| {_p(f['reconnect_ms'])} / {_p(f['reconnect_ms'], 'p95')} "
                        f"| {_p(f['after_reachable_ms'], 'p95')} |"
                    )
    if doc["renewal"]:
        out += ["", "### Renewal (sessions capped; response_ms of the transcript's latency lines)", ""]
        out.append(
            "| profile | transport | renewals (downtime ms) | other reconnects | turns after renewal: n, p50 ms "
            "| other turns: n, p50 ms |"
        )
        out.append("|---|---|---|---|---|---|")
        for r in doc["renewal"]:
            a, o = r["response_after_renewal_ms"], r["response_other_ms"]
            down = ",".join(f"{x:g}" for x in r["renewal_downtime_ms"]) or "-"
            others = ", ".join(r["other_reconnects"]) or "-"
            out.append(
                f"| {r['profile']} | {r['transport']} | {r['renewals']} ({down}) | {others} "
                f"| {a['n']}, {_p(a)} | {o['n']}, {_p(o)} |"
            )
    errors = [
        f"{r['transport']}/{r['profile']}: {e}"
        for k in ("reconnect", "mixed", "renewal")
        for r in doc[k]
        for e in r["errors"]
    ]
    if errors or doc["notes"]:
        out += ["", *[f"- {x}" for x in doc["notes"] + errors]]
    return "\n".join(out)


def failures(doc: dict[str, Any]) -> list[str]:
    """What makes the exit code 1: a run that errored, crashed, or wrote a bad transcript."""
    bad = []
    for k in ("reconnect", "mixed", "renewal"):
        for r in doc[k]:
            name = f"{k} {r['profile']}/{r['transport']}"
            tr = r["transcript"]
            if r["errors"] or not r["alive_until_stopped"] or r["exit_code"] != 0 or r["internal_errors"]:
                bad.append(f"{name}: errors {r['errors']}, exit {r['exit_code']} {r['stderr_tail']}")
            if (
                tr["invalid"]
                or tr["unknown_kind"]
                or tr["out_of_order"]
                or tr["duplicates"]
                or not tr["ends_with_stats"]
            ):
                bad.append(f"{name}: transcript {tr}")
    return bad


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.resilience", description=__doc__.split("\n")[0])
    p.add_argument("--transports", default="webrtc,ws")
    p.add_argument("--profiles", default="clean,lossy")
    p.add_argument("--drops", type=int, default=20, help="drops per transport x profile")
    p.add_argument("--stalls", type=int, default=20, help="silent deaths per transport on --stall-profiles")
    p.add_argument("--faults", type=int, default=100, help="mixed faults in one run per transport")
    p.add_argument("--renewals", type=int, default=5, help="renewals per transport")
    p.add_argument("--session-cap", type=float, default=15.0, help="session_max_seconds for the renewal run")
    p.add_argument("--stall-profiles", default="clean")
    p.add_argument("--fault-profiles", default="clean")
    p.add_argument("--renewal-profiles", default="clean")
    p.add_argument("--jobs", type=int, default=1, help="transports run at once (1: one after the other)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="raw files (default: a new temporary directory)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not transports or any(t not in TRANSPORTS for t in transports):
        raise ConfigError(f"--transports takes {', '.join(TRANSPORTS)} (got {args.transports!r})")
    if min(args.drops, args.stalls, args.faults, args.renewals) < 0:
        raise ConfigError("counts must be >= 0")

    def names(spec: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in spec.split(",") if n.strip())

    extra = {} if args.dir is None else {"out_dir": Path(args.dir)}
    return Settings(
        transports=transports,
        profiles=parse_profiles(args.profiles),
        drops=args.drops,
        stalls=args.stalls,
        faults=args.faults,
        renewals=args.renewals,
        session_cap_s=args.session_cap,
        stall_profiles=names(args.stall_profiles),
        fault_profiles=names(args.fault_profiles),
        renewal_profiles=names(args.renewal_profiles),
        jobs=args.jobs,
        seed=args.seed,
        **extra,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        s = settings_from(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def progress(msg: str) -> None:
        if args.verbose:
            print(msg, file=sys.stderr, flush=True)

    t0 = time.monotonic()
    doc: dict[str, Any] = {
        "command": "python -m bridge.bench.resilience " + shlex.join(sys.argv[1:] if argv is None else argv)
    }
    doc["machine"] = machine()
    doc.update(asyncio.run(run_all(s, progress)))
    doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["seconds"] = round(time.monotonic() - t0, 1)
    doc["failures"] = failures(doc)
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(tables(doc))
    print(f"\n{doc['seconds']:.0f} s; raw files in {s.out_dir}" + (f"; JSON in {args.out}" if args.out else ""))
    if not args.out:
        print(json.dumps({k: v for k, v in doc.items() if k != "raw"}))
    for f in doc["failures"]:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if doc["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
