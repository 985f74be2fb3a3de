#!/usr/bin/env bash
# Set up Stella Kiosk on a Debian / Ubuntu / Raspberry Pi OS machine: system packages (apt, as root or
# through sudo) and a Python virtual environment in .venv with the project installed in it.
# Idempotent: packages already present are not reinstalled, an existing .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

# mmdebstrap, qemu-user-static and zstd build the arm64 root that proves the Pi installer (tests/test_install_arm64.py).
APT_PACKAGES=(portaudio19-dev libsystemd-dev pkg-config espeak-ng sox
              pulseaudio pulseaudio-utils libasound2-plugins shellcheck postgresql faketime strace chromium
              mmdebstrap arch-test qemu-user-static zstd)
PYTHON=${PYTHON:-python3}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv python3-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.stella-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/stella-kiosk)"
