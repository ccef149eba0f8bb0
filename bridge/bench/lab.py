"""The latency lab: the emulator in the server namespace, ``bridge run`` in the client namespace, the
impairing forwarder between them, and black-box measurement from the audio files.

Per profile: one emulator with ``echo`` and one with ``tone`` (think time and reply length fixed, so
they can be subtracted), started in the server namespace. Per transport: one ``bridge run`` with an
echo plan (``trials`` bursts -> mouth-to-ear round trips) and one with a turn chain (``trials``
responses, ``trials - 1`` barge-ins; :func:`bridge.bench.signals.turn_plan`). WebRTC also gets the
stock aiortc baseline on the echo plan. Each ``bridge run`` is a real subprocess with ``.wav`` devices;
its CPU time is sampled from ``/proc/<pid>/stat`` and its peak RSS read from ``wait4``.

Without root or ``ip netns`` only ``clean`` runs, on 127.0.0.1, with every ICE candidate on loopback.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench import budget, metrics, signals
from bridge.bench.netem import Topology, netns_unavailable_reason
from bridge.bench.profiles import PROFILES, Profile
from bridge.errors import BridgeError

log = logging.getLogger(__name__)

EMU_PORTS = {"echo": 8701, "tone": 8702}
STARTUP_TIMEOUT_S = 30.0
RUN_GRACE_S = 40.0  # beyond the planned length: start-up, connect, teardown
TICKS = os.sysconf("SC_CLK_TCK")


def _vad_ms(key: str) -> int:
    """The turn detection ``bridge run`` asks for (its session config is the one source of truth)."""
    from bridge.protocol.session_config import default_turn_detection

    return int(default_turn_detection()[key])


@dataclass(frozen=True)
class LabSettings:
    transports: list[str]
    profiles: list[Profile]
    trials: int
    out_dir: Path
    think_ms: int = 200
    reply_s: float = 3.0
    echo_spacing_s: float = 1.0
    stock: bool = True
    stock_profiles: tuple[str, ...] | None = None  # None: every profile


@dataclass
class Cell:
    """Everything measured for one transport x profile."""

    transport: str
    profile: str
    trials: metrics.Trials = field(default_factory=metrics.Trials)
    cpu_pct: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    connect_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    client_stats: list[dict[str, Any]] = field(default_factory=list)  # the runs' ``stats`` transcript lines

    def to_dict(self) -> dict[str, Any]:
        t = self.trials
        trunc = [abs(v) for v in t.truncation_error_ms]
        return {
            "transport": self.transport,
            "profile": self.profile,
            "round_trip_ms": metrics.summary(t.round_trip_ms),
            "response_ms": metrics.summary(t.response_ms),
            "response_net_ms": metrics.summary(t.response_net_ms),
            "bargein_stop_ms": metrics.summary(t.bargein_stop_ms),
            "truncation_error_abs_ms": metrics.summary(trunc),
            "truncation_error_median_signed_ms": (
                round(float(np.median(t.truncation_error_ms)), 1) if t.truncation_error_ms else None
            ),
            "reported": {k: metrics.summary(v) for k, v in t.reported.items()},
            "stages": {k: metrics.summary(v) for k, v in sorted(t.stages.items())},
            "gaps_per_min": None if t.gaps_per_min is None else round(t.gaps_per_min, 2),
            "missing": t.missing,
            "skipped": t.skipped,
            "cpu_pct": round(max(self.cpu_pct), 1) if self.cpu_pct else None,
            "rss_mb": round(max(self.rss_mb), 1) if self.rss_mb else None,
            "connect_s": round(float(np.median(self.connect_s)), 2) if self.connect_s else None,
            "client": self._client(),
            "errors": self.errors,
            "raw": {
                "round_trip_ms": [round(v, 1) for v in t.round_trip_ms],
                "response_ms": [round(v, 1) for v in t.response_ms],
                "bargein_stop_ms": [round(v, 1) for v in t.bargein_stop_ms],
                "truncation_error_ms": [round(v, 1) for v in t.truncation_error_ms],
            },
        }

    def _client(self) -> dict[str, Any] | None:
        if self.transport != "webrtc" or not self.client_stats:
            return None
        seconds = sum(s.get("playout", {}).get("pulled", 0) for s in self.client_stats) / 48_000
        out = budget.client_summary(self.client_stats, seconds)
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in out.items()}


class LocalNet:
    """No namespaces: everything on 127.0.0.1 (clean profile only)."""

    server_addr = "127.0.0.1"
    loopback = True
    profile = PROFILES["clean"]

    def exec_argv(self, side: str, argv: list[str]) -> list[str]:
        return argv

    def set_profile(self, profile: Profile) -> None:
        if profile.impaired:
            raise BridgeError("impaired profiles need network namespaces")

    def measure(self, **_: Any) -> dict[str, object]:
        return {}

    def close(self) -> None:
        pass


@dataclass
class ProcResult:
    returncode: int
    cpu_pct: float | None
    rss_mb: float | None
    stderr: str


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def run_monitored(argv: list[str], env: dict[str, str], timeout: float, log_dir: Path, name: str) -> ProcResult:
    """Run a client process; CPU % of one core while connected (after its first transcript line)."""
    err_path = log_dir / f"{name}.stderr"
    with open(log_dir / f"{name}.stdout", "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    status, usage = 0, None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                proc.send_signal(signal.SIGINT)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -1
                break
            cpu = _cpu_seconds(proc.pid)
            if cpu is not None:
                samples.append((time.time(), cpu))
            time.sleep(0.2)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    transcript = next((a for i, a in enumerate(argv) if i and argv[i - 1] == "--transcript"), None)
    cpu_pct = None
    start = _connected_unix(Path(transcript)) if transcript else None
    if start is not None:
        window = [s for s in samples if s[0] >= start + 0.5]
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            cpu_pct = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) * 100
    rss = usage.ru_maxrss / 1024 if usage is not None else None  # kB on Linux
    return ProcResult(proc.returncode or 0, cpu_pct, rss, err_path.read_text()[-2000:])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return out


def _connected_unix(path: Path) -> float | None:
    session = next((x for x in _read_jsonl(path) if x.get("kind") == "session"), None)
    if not session:
        return None
    return datetime.fromisoformat(session["ts"].replace("Z", "+00:00")).timestamp()


def timing_of(transcript: Path) -> metrics.Timing:
    lines = _read_jsonl(transcript)
    session = next((x for x in lines if x.get("kind") == "session"), None)
    if session is None or "input_start_unix" not in session or "output_start_unix" not in session:
        raise BridgeError(f"{transcript}: no session line with input_start_unix/output_start_unix")
    connected = datetime.fromisoformat(session["ts"].replace("Z", "+00:00")).timestamp()
    return metrics.Timing(float(session["input_start_unix"]), float(session["output_start_unix"]), connected)


class Emulator:
    """One ``bridge emulate`` process in the server namespace (context manager)."""

    def __init__(self, net: Any, behaviour: str, settings: LabSettings, key: str, log_path: Path) -> None:
        self.net, self.behaviour, self.settings, self.key, self.log_path = net, behaviour, settings, key, log_path
        self.port = EMU_PORTS[behaviour]
        self.base_url = f"http://{net.server_addr}:{self.port}/v1"
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Emulator:
        argv = [sys.executable, "-m", "bridge.bench.procs", "emulate", "--host", self.net.server_addr]
        argv += ["--port", str(self.port), "--behaviour", self.behaviour, "--api-keys", self.key]
        argv += ["--think-ms", str(self.settings.think_ms), "--reply-seconds", str(self.settings.reply_s)]
        argv += ["--log", str(self.log_path)]
        if not self.net.loopback:
            argv.append("--no-loopback-ice")
        self._proc = subprocess.Popen(
            self.net.exec_argv("srv", argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], STARTUP_TIMEOUT_S)
        line = self._proc.stdout.readline() if ready else ""
        if "listening on" not in line:
            self.__exit__(None, None, None)
            raise BridgeError(f"the {self.behaviour} emulator did not start: {line.strip() or 'timeout'}")
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()

    def log_records(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.log_path)


class Lab:
    """Runs every transport x profile cell; :meth:`run` returns the cells (and writes raw files)."""

    def __init__(self, settings: LabSettings, *, progress: Any = None) -> None:
        self.settings = settings
        self.key = "sk-bench-" + secrets.token_hex(8)
        self.progress = progress or (lambda msg: None)
        self.vad_silence_ms = _vad_ms("silence_duration_ms")
        self.vad_padding_ms = _vad_ms("prefix_padding_ms")
        self.notes: list[str] = []
        self.paths: dict[str, dict[str, Any]] = {}

    def _net(self) -> Any:
        reason = netns_unavailable_reason()
        impaired = [p.name for p in self.settings.profiles if p.impaired]
        if reason is None:
            topo = Topology(self.settings.profiles[0])
            topo.open()
            return topo
        if impaired:
            self.notes.append(f"only the clean profile ran: {reason}")
            self.progress(f"bench: only the clean profile runs: {reason}")
        return LocalNet()

    def run(self) -> list[Cell]:
        s = self.settings
        s.out_dir.mkdir(parents=True, exist_ok=True)
        raw = s.out_dir / "raw"
        raw.mkdir(exist_ok=True)
        net = self._net()
        cells: list[Cell] = []
        try:
            for profile in s.profiles:
                if isinstance(net, LocalNet) and profile.impaired:
                    continue
                net.set_profile(profile)
                path = net.measure(udp_count=100, interval=0.005, tcp_count=5)
                self.paths[profile.name] = _path_summary(path)
                self.progress(f"bench: profile {profile.name} ({profile.describe()}) path {self.paths[profile.name]}")
                cells += self._profile(net, profile, raw / profile.name)
        finally:
            net.close()
        return cells

    def _profile(self, net: Any, profile: Profile, d: Path) -> list[Cell]:
        s = self.settings
        d.mkdir(parents=True, exist_ok=True)
        lead = 1.5 + 0.03 * profile.delay_ms + (1.0 if profile.loss else 0.0)
        echo = signals.echo_plan(s.trials, lead, spacing_s=s.echo_spacing_s)
        turns = signals.turn_plan(
            s.trials + 1, lead, vad_silence_ms=self.vad_silence_ms, think_ms=s.think_ms, reply_s=s.reply_s
        )
        signals.write_wav(d / "echo_in.wav", echo.audio)
        signals.write_wav(d / "turns_in.wav", turns.audio)
        cells = []
        with (
            Emulator(net, "echo", s, self.key, d / "emulator_echo.jsonl") as emu_echo,
            Emulator(net, "tone", s, self.key, d / "emulator_tone.jsonl") as emu_tone,
        ):
            transports = list(s.transports)
            stock_here = s.stock_profiles is None or profile.name in s.stock_profiles
            if s.stock and stock_here and "webrtc" in transports:
                transports.append("stock")
            for transport in transports:
                cell = Cell(transport, profile.name)
                self.progress(f"bench: {profile.name} / {transport}: {s.trials} round trips")
                self._one(net, cell, emu_echo, echo, d, "echo")
                if transport != "stock":
                    self.progress(f"bench: {profile.name} / {transport}: {s.trials} turns with barge-in")
                    self._one(net, cell, emu_tone, turns, d, "turns")
                cells.append(cell)
                self.progress(f"bench: {profile.name} / {transport}: {_short(cell)}")
        return cells

    def _one(self, net: Any, cell: Cell, emu: Emulator, plan: signals.Plan, d: Path, kind: str) -> None:
        s = self.settings
        name = f"{cell.transport}_{kind}"
        files = {k: d / f"{name}.{ext}" for k, ext in (("out", "wav"), ("t", "jsonl"))}
        for f in files.values():
            f.unlink(missing_ok=True)
        inp = d / f"{kind}_in.wav"
        if cell.transport == "stock":
            argv = [sys.executable, "-m", "bridge.bench.stock", "--api-base", emu.base_url, "--input", str(inp)]
            argv += ["--output", str(files["out"]), "--transcript", str(files["t"])]
        else:
            argv = [sys.executable, "-m", "bridge.bench.procs", "run", "--transport", cell.transport]
            argv += ["--input", str(inp), "--output", str(files["out"]), "--transcript", str(files["t"])]
            argv += ["--api-base", emu.base_url, "--duration", f"{plan.seconds:.1f}"]
        if net.loopback:
            argv.append("--loopback-ice")
        env = {**os.environ, "OPENAI_API_KEY": self.key}
        env.pop("OPENAI_BASE_URL", None)
        result = run_monitored(net.exec_argv("cli", argv), env, plan.seconds + RUN_GRACE_S, d, name)
        if result.returncode != 0 or not files["out"].is_file():
            tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
            cell.errors.append(f"{kind}: exit {result.returncode}: {tail[0][:200]}")
            return
        try:
            timing = timing_of(files["t"])
        except BridgeError as exc:
            cell.errors.append(f"{kind}: {exc}")
            return
        out = signals.read_wav(files["out"])
        server_log = [r for r in emu.log_records() if r.get("t", 0) >= timing.input_start_unix]
        if kind == "echo":
            server = metrics.ServerView.from_log(server_log, timing.input_start_unix)
            tr = metrics.echo_trials(plan.bursts, out, timing, s.echo_spacing_s, server, self.vad_padding_ms)
        else:
            tr = metrics.turn_trials(
                plan.bursts,
                out,
                timing,
                think_ms=s.think_ms,
                vad_silence_ms=self.vad_silence_ms,
                reply_s=s.reply_s,
                server_log=server_log,
                padding_ms=self.vad_padding_ms,
            )
            tr.reported = metrics.reported_latency(_read_jsonl(files["t"]))
        stats = [x for x in _read_jsonl(files["t"]) if x.get("kind") == "stats"]
        if stats:
            cell.client_stats.append(stats[-1])
        if cell.transport == "stock":
            tr.gaps, tr.audio_s = 0, 0.0  # it writes frames at arrival time: its "gaps" are arrival jitter
        cell.trials.merge(tr)
        cell.connect_s.append(timing.connected_unix - timing.input_start_unix)
        if result.cpu_pct is not None and cell.transport != "stock":
            cell.cpu_pct.append(result.cpu_pct)
        if result.rss_mb is not None and cell.transport != "stock":
            cell.rss_mb.append(result.rss_mb)


def _path_summary(path: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    udp = path.get("udp")
    if udp and udp.get("rtt_ms"):
        out["udp_rtt_p50_ms"] = round(float(np.median(udp["rtt_ms"])), 2)
        out["udp_rtt_p95_ms"] = round(float(np.percentile(udp["rtt_ms"], 95)), 2)
        out["udp_round_trip_loss"] = round(1 - udp["received"] / max(1, udp["sent"]), 3)
    tcp = path.get("tcp")
    if tcp and tcp.get("rtt_ms"):
        out["tcp_rtt_p50_ms"] = round(float(np.median(tcp["rtt_ms"])), 2)
    for direction in ("up", "down"):
        rate = path.get(f"rate_{direction}")
        if rate and rate.get("kbps"):
            out[f"{direction}_kbps"] = rate["kbps"]
            out[f"{direction}_burst_drain_ms"] = rate["drain_ms"]
    return out


def _short(cell: Cell) -> str:
    d = cell.to_dict()
    parts = []
    for key, label in (("round_trip_ms", "rtt"), ("response_net_ms", "resp-net"), ("bargein_stop_ms", "stop")):
        v = d[key]
        if v["n"]:
            parts.append(f"{label} p50 {v['p50']} ms")
    if cell.errors:
        parts.append(f"{len(cell.errors)} error(s): {cell.errors[0]}")
    return ", ".join(parts) or "no numbers"
