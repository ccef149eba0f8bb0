#!/usr/bin/env bash
# Install everything bridge needs on a Debian/Ubuntu machine: system packages (when root or sudo is
# available) and the Python package with its dev extras. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins espeak-ng sox iproute2 ethtool chromium systemd redis-server haproxy)

apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "setup: not root and no sudo; install these yourself if missing: ${APT_PACKAGES[*]}" >&2
      return 0
    fi
    sudo="sudo"
  fi
  if ! command -v apt-get >/dev/null; then
    echo "setup: no apt-get; install these yourself: ${APT_PACKAGES[*]}" >&2
    return 0
  fi
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "${BRIDGE_SKIP_APT:-0}" != "1" ]; then apt_install; fi
python3 -m pip install -q --disable-pip-version-check -e ".[dev,bench]" 2>&1 | grep -v -E "^(WARNING|  Location|DEPRECATION)" || true
python3 -c "import bridge, aiortc, sounddevice" 2>/dev/null || python3 -c "import bridge, aiortc"
echo "setup: ok"
