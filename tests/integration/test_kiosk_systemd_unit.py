"""The example unit file passes ``systemd-analyze verify`` (Debian's systemd), and says what the brief asks."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "examples" / "kiosk" / "bridge-kiosk.service"
ENV = ROOT / "examples" / "kiosk" / "kiosk.env"
EXEC = "/opt/bridge/venv/bin/bridge"


def unit_settings() -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, value = line.split("=", 1)
        out.setdefault(section, {}).setdefault(key, []).append(value)
    return out


def test_unit_declares_notify_watchdog_restart_user_and_journal() -> None:
    s = unit_settings()["Service"]
    assert s["Type"] == ["notify"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["Restart"] == ["always"]
    assert s["EnvironmentFile"] == ["/etc/bridge/kiosk.env"]
    assert s["User"] != ["root"] and "audio" in s["SupplementaryGroups"][0].split()
    assert s["StandardOutput"] == s["StandardError"] == ["journal"]
    assert s["ExecStart"][0].startswith(EXEC + " run --kiosk")
    assert "char-alsa rw" in s["DeviceAllow"]  # sound still allowed under DevicePolicy=closed
    assert "PrivateDevices" not in s


def test_env_file_parses_and_holds_no_real_key() -> None:
    text = ENV.read_text()
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=("#",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep the variables' case
    parser.read_string("[env]\n" + text)
    env = dict(parser["env"])
    assert "BRIDGE_KIOSK_ARGS" in env and "--kiosk" not in env["BRIDGE_KIOSK_ARGS"]
    assert "OPENAI_API_KEY" not in env  # only commented out
    assert "sk-" not in "".join(v for v in env.values())


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (apt-get install systemd; scripts/setup.sh installs it)")
    # verify checks that ExecStart exists: point it at a stand-in executable, change nothing else
    stub = tmp_path / "bridge"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(EXEC, str(stub)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # only lines about our unit count (verify also loads the system's units, e.g. sound.target)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line]
    assert proc.returncode == 0, proc.stderr
    assert ours == []


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(EXEC, "/bin/true").replace("WatchdogSec=", "WatchDogSecs="))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in proc.stderr and "WatchDogSecs" in proc.stderr


def test_hardening_exposure_stays_low(tmp_path: Path) -> None:
    """``systemd-analyze security --offline`` scores the sandbox; 2.1 ("OK") when written, fail above 3.0."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze")
    stub = tmp_path / "bridge"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(EXEC, str(stub)))
    proc = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=30", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout[-500:]
    assert "Overall exposure level" in proc.stdout
