"""The lab's network: client and server namespaces joined through an impairing forwarder.

```
 <prefix>-cli                 <prefix>-mid                      <prefix>-srv
 c0 10.77.0.1/24 ==veth== mc  [forwarder.py: delay/jitter/loss]  ms ==veth== s0 10.77.0.2/24
```

The kernel has no ``netem`` (ENVIRONMENT.md "Network impairment"): the middle namespace runs
:mod:`bridge.bench.forwarder`, a layer-2 userspace bridge, so every frame (ARP, ICE, DTLS, SRTP, SCTP,
TCP) crosses the same impairment. The addresses exist only inside the namespaces made here; nothing is
routed anywhere else. IPv6 is off in all three namespaces (no link-local chatter, no v6 ICE
candidates); offloads are off on every veth (ENVIRONMENT.md: with them on, TCP and WebRTC hang).

Namespace names carry the lab's pid, so parallel runs don't clash, and a run first deletes namespaces
left behind by lab processes that no longer exist. Everything is torn down in :meth:`Topology.close`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from types import TracebackType

from bridge.bench.profiles import Profile
from bridge.errors import BridgeError

log = logging.getLogger(__name__)

NS_PREFIX = "brbench"
STALE_RE = re.compile(rf"^{NS_PREFIX}(\d+)-(cli|mid|srv)$")
CLIENT_ADDR = "10.77.0.1"
SERVER_ADDR = "10.77.0.2"
PREFIX_LEN = 24
OFFLOADS = ["tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off"]
READY_TIMEOUT_S = 10.0


class NetnsError(BridgeError):
    """The lab's namespaces or forwarder could not be set up."""


def netns_unavailable_reason() -> str | None:
    """None when impaired profiles can run here; otherwise one line saying why not."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "ethtool"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 ethtool)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete lab namespaces whose owning process is gone; returns the names deleted."""
    out = _run("ip", "netns", "list", check=False).stdout
    deleted = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = STALE_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            _run("ip", "netns", "del", name, check=False)
            deleted.append(name)
    if deleted:
        log.info("removed stale lab namespaces: %s", ", ".join(deleted))
    return deleted


class Topology:
    """Three namespaces and the forwarder between them. Use as a context manager (sync).

    ``exec_argv(side, argv)`` prefixes a command to run in ``"cli"`` or ``"srv"``.
    :meth:`set_profile` swaps the forwarder for one with another profile without rebuilding.
    """

    loopback = False  # addresses are the namespaces' own; ICE offers them

    def __init__(self, profile: Profile, *, lifetime_s: float = 3600.0, seed: int | None = None) -> None:
        self.profile = profile
        self.lifetime_s = lifetime_s
        self.seed = seed
        base = f"{NS_PREFIX}{os.getpid()}"
        self.ns = {"cli": f"{base}-cli", "mid": f"{base}-mid", "srv": f"{base}-srv"}
        self.client_addr = CLIENT_ADDR
        self.server_addr = SERVER_ADDR
        self._forwarder: subprocess.Popen[str] | None = None
        self._created: list[str] = []
        self.last_counts: dict[str, dict[str, int]] = {}

    def __enter__(self) -> Topology:
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def exec_argv(self, side: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side], *argv]

    def open(self) -> None:
        reason = netns_unavailable_reason()
        if reason:
            raise NetnsError(reason)
        cleanup_stale()
        try:
            self._build()
            self._start_forwarder()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for ns in self.ns.values():
            _run("ip", "netns", "add", ns)
            self._created.append(ns)
            for key in ("all", "default"):
                _run("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1", check=False)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        cli, mid, srv = self.ns["cli"], self.ns["mid"], self.ns["srv"]
        _run("ip", "link", "add", "c0", "netns", cli, "type", "veth", "peer", "name", "mc", "netns", mid)
        _run("ip", "link", "add", "s0", "netns", srv, "type", "veth", "peer", "name", "ms", "netns", mid)
        for ns, dev in ((cli, "c0"), (mid, "mc"), (mid, "ms"), (srv, "s0")):
            # some features are fixed on veth; ethtool then exits non-zero though the rest changed
            _run("ip", "netns", "exec", ns, "ethtool", "-K", dev, *OFFLOADS, check=False)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        for dev in ("mc", "ms"):
            _run("ip", "-n", mid, "link", "set", dev, "promisc", "on")
        _run("ip", "-n", cli, "addr", "add", f"{CLIENT_ADDR}/{PREFIX_LEN}", "dev", "c0")
        _run("ip", "-n", srv, "addr", "add", f"{SERVER_ADDR}/{PREFIX_LEN}", "dev", "s0")

    def _start_forwarder(self) -> None:
        argv = [sys.executable, "-m", "bridge.bench.forwarder", "mc", "ms"]
        argv += ["--profile", json.dumps(self.profile.to_dict()), "--lifetime", str(self.lifetime_s)]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        proc = subprocess.Popen(self.exec_argv("mid", argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._forwarder = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise NetnsError(f"the forwarder did not start: {(err or line).strip()[-300:] or 'timeout'}")
        log.info("forwarder up in %s: %s (%s)", self.ns["mid"], self.profile.name, self.profile.describe())

    def _stop_forwarder(self) -> None:
        proc, self._forwarder = self._forwarder, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                self.last_counts = json.loads(line)
                break

    def set_profile(self, profile: Profile) -> None:
        """Restart the forwarder with ``profile`` (the namespaces and addresses stay)."""
        self._stop_forwarder()
        self.profile = profile
        self._start_forwarder()

    def measure(
        self, udp_count: int = 100, tcp_count: int = 20, interval: float = 0.01, rate: bool | None = None
    ) -> dict[str, object]:
        """Probe the path client -> server now: UDP and TCP echo round trips and, when the profile has a
        bottleneck (or ``rate``), a burst each way for its rate (see :mod:`bridge.bench.probe`)."""
        port = "7007"
        rate = self.profile.limited if rate is None else rate
        lifetime = udp_count * interval + tcp_count * 1.0 + (30 if rate else 0) + 10
        probe = [sys.executable, "-m", "bridge.bench.probe"]
        server = subprocess.Popen(
            self.exec_argv("srv", [*probe, "serve", "--port", port, "--lifetime", str(lifetime)]),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            ready, _, _ = select.select([server.stdout], [], [], READY_TIMEOUT_S)
            if not ready or server.stdout.readline().strip() != "ready":
                raise NetnsError("the probe echo server did not start")
            out: dict[str, object] = {}
            kinds = [("udp", ["udp", "--count", str(udp_count), "--interval", str(interval)])]
            if tcp_count > 0:
                kinds.append(("tcp", ["tcp", "--count", str(tcp_count), "--timeout", "10"]))
            if rate:
                for direction in ("up", "down"):
                    kinds.append((f"rate_{direction}", ["rate", "--direction", direction, "--count", "150"]))
            for kind, (cmd, *extra) in kinds:
                argv = self.exec_argv("cli", [*probe, cmd, self.server_addr, port, *extra])
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=lifetime)
                if proc.returncode != 0:
                    raise NetnsError(f"{kind} probe failed: {proc.stderr.strip()[-300:]}")
                out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
            return out
        finally:
            server.terminate()
            server.wait(timeout=5)

    def close(self) -> None:
        """Stop the forwarder and delete the namespaces (idempotent; errors are logged, not raised)."""
        try:
            self._stop_forwarder()
        finally:
            while self._created:
                ns = self._created.pop()
                proc = _run("ip", "netns", "del", ns, check=False)
                if proc.returncode != 0:
                    log.warning("could not delete namespace %s: %s", ns, proc.stderr.strip())
            # veths die with their namespaces; give the kernel a moment so a rebuild can reuse names
            time.sleep(0.05)
