#!/usr/bin/env bash
# Install Stella Kiosk on a Raspberry Pi OS (Bookworm) machine: system packages, a service user,
# the app in a venv under /opt/stella-kiosk, the config in /etc/stella-kiosk, the systemd unit.
# Idempotent: run it again to update; an admin's config and device key are never overwritten
# unless new ones are given.
#
#   sudo scripts/install-pi.sh --config my-kiosk.toml --device-key-file device.key
#
# Options:
#   --config FILE         kiosk.toml to install (default: keep the existing one, or the example)
#   --device-key KEY      this kiosk's device key (from `stella-kiosk companion add-kiosk NAME`)
#   --device-key-file F   the same, read from a file
#   --trusted-root FILE   the update repository's root.json (over-the-air updates; docs/UPDATES.md)
#   --no-enable           install the unit but do not enable or start it
#   --root DIR            install into DIR instead of / (testing); skips apt, users, systemctl
#   --with-venv           with --root: also create the venv and install the app into it
#   -h, --help            this text
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=""
CONFIG=""
DEVICE_KEY=""
TRUSTED_ROOT=""
ENABLE=1
WITH_VENV=0
USER_NAME=stella-kiosk
# PyAudio and systemd-python come from Debian (the venv sees them through its system site packages):
# they have no aarch64 wheels, and compiling them would need a compiler and headers on every kiosk.
# espeak-ng is the demo learner's voice and the simulated tutor's (`stella-kiosk demo` on the kiosk).
APT_PACKAGES=(python3-venv python3-pyaudio python3-systemd ca-certificates espeak-ng sox alsa-utils rsync)
# gpiozero's pin factory for the Pi 5: Raspberry Pi OS's archive has python3-lgpio (built for its
# kernel); plain Debian does not, and there pip installs the lgpio wheel the kiosk extra names.
OPTIONAL_APT_PACKAGES=(python3-lgpio)

die() { echo "install-pi: $*" >&2; exit 1; }
say() { echo "install-pi: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG=${2:?--config needs a file}; shift 2 ;;
    --device-key) DEVICE_KEY=${2:?--device-key needs a key}; shift 2 ;;
    --device-key-file) DEVICE_KEY=$(tr -d '[:space:]' < "${2:?--device-key-file needs a file}"); shift 2 ;;
    --trusted-root) TRUSTED_ROOT=${2:?--trusted-root needs a file}; shift 2 ;;
    --no-enable) ENABLE=0; shift ;;
    --root) ROOT=$(mkdir -p "${2:?--root needs a directory}" && cd "$2" && pwd); shift 2 ;;
    --with-venv) WITH_VENV=1; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

OPT="$ROOT/opt/stella-kiosk"
ETC="$ROOT/etc/stella-kiosk"
UNIT_DIR="$ROOT/etc/systemd/system"
STATE="$ROOT/var/lib/stella-kiosk"

# Steps that change the real system run only without --root; with --root they are printed.
system() {
  if [ -n "$ROOT" ]; then
    echo "install-pi: (--root) would run: $*"
  else
    "$@"
  fi
}

if [ -z "$ROOT" ]; then
  [ "$(id -u)" = 0 ] || die "run as root (sudo $0 ...)"
  [ -f /etc/debian_version ] || die "this installer is for Raspberry Pi OS / Debian"
fi

if [ -n "$CONFIG" ]; then
  [ -f "$CONFIG" ] || die "config file $CONFIG not found"
  # Reject a broken config before touching anything.
  checker="$SRC/.venv/bin/stella-kiosk"
  [ -x "$checker" ] || checker="$OPT/.venv/bin/stella-kiosk"
  [ -x "$checker" ] || checker=$(command -v stella-kiosk || true)
  if [ -n "$checker" ] && [ -x "$checker" ]; then
    # --static: the key file and state directory it names are not installed yet.
    "$checker" check-config --static "$CONFIG" >/dev/null || exit 78
  fi
fi

say "system packages"
system apt-get update -qq
for p in "${OPTIONAL_APT_PACKAGES[@]}"; do
  if [ -z "$ROOT" ] && apt-cache policy "$p" 2>/dev/null | grep -q '^ *Candidate: [^(]'; then
    APT_PACKAGES+=("$p")
  fi
done
system env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}"

say "service user $USER_NAME (groups gpio, audio)"
for group in gpio audio; do
  system sh -c "getent group $group >/dev/null || groupadd --system $group"
done
system sh -c "id -u $USER_NAME >/dev/null 2>&1 || useradd --system --home-dir /var/lib/stella-kiosk --shell /usr/sbin/nologin $USER_NAME"
system usermod -a -G gpio,audio "$USER_NAME"

say "application in $OPT"
mkdir -p "$OPT" "$ETC" "$UNIT_DIR" "$STATE"
# Copy the project (not its git history, venv or local outputs); --delete keeps updates exact.
if command -v rsync >/dev/null 2>&1; then
  rsync -a --delete --exclude .git --exclude .venv --exclude demo-output --exclude '__pycache__' \
    --exclude '.pytest_cache' --exclude '.ruff_cache' "$SRC/" "$OPT/src/"
else
  rm -rf "$OPT/src" && mkdir -p "$OPT/src"
  (cd "$SRC" && tar --exclude .git --exclude .venv --exclude demo-output -cf - .) | (cd "$OPT/src" && tar -xf -)
fi
if [ -z "$ROOT" ] || [ "$WITH_VENV" = 1 ]; then
  # The release layout (docs/UPDATES.md): each version in releases/<version>/venv, `current` naming the
  # one that runs (switched by one atomic rename), and .venv -> current/venv, the path the units use.
  VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml" | head -n 1)
  [ -n "$VERSION" ] || die "no version in $SRC/pyproject.toml"
  REL="$OPT/releases/$VERSION"
  if [ -d "$OPT/.venv" ] && [ ! -L "$OPT/.venv" ]; then
    say "moving $OPT/.venv to the release layout ($REL/venv)"
    rm -rf "$OPT/.venv"
  fi
  # System site packages: Debian's PyAudio, systemd-python and (on Raspberry Pi OS) lgpio. A venv made
  # without them (by an older installer) would try to compile PyAudio: make it again.
  if [ -x "$REL/venv/bin/python" ] && ! grep -qx 'include-system-site-packages = true' "$REL/venv/pyvenv.cfg"; then
    say "recreating $REL/venv with system site packages"
    rm -rf "$REL/venv"
  fi
  if [ ! -x "$REL/venv/bin/python" ]; then
    mkdir -p "$REL"
    python3 -m venv --system-site-packages "$REL/venv"
  fi
  # Only the kiosk's extra: the companion's server stack (PostgreSQL driver, web console) stays off the Pi.
  "$REL/venv/bin/pip" install -q --upgrade "$OPT/src[kiosk]"
  sync
  echo "$VERSION" > "$REL/COMPLETE"
  sync
  ln -sfn "releases/$VERSION" "$OPT/.current.tmp" && mv -T "$OPT/.current.tmp" "$OPT/current"
  ln -sfn current/venv "$OPT/.venv.tmp" && mv -T "$OPT/.venv.tmp" "$OPT/.venv"
fi

say "configuration in $ETC"
if [ -n "$CONFIG" ]; then
  install -m 0640 "$CONFIG" "$ETC/kiosk.toml"
elif [ ! -f "$ETC/kiosk.toml" ]; then
  sed -e 's#^state_dir = .*#state_dir = "/var/lib/stella-kiosk"#' \
      -e 's#^device_key_file = .*#device_key_file = "/etc/stella-kiosk/device.key"#' \
      "$SRC/config/kiosk.example.toml" > "$ETC/kiosk.toml"
  chmod 0640 "$ETC/kiosk.toml"
  say "installed the example config: edit $ETC/kiosk.toml (companion url, pins, audio devices)"
fi
if [ -n "$TRUSTED_ROOT" ]; then
  [ -f "$TRUSTED_ROOT" ] || die "trusted root $TRUSTED_ROOT not found"
  install -m 0644 "$TRUSTED_ROOT" "$ETC/root.json"
fi
if [ -n "$DEVICE_KEY" ]; then
  (umask 077 && printf '%s\n' "$DEVICE_KEY" > "$ETC/device.key")
fi
[ -f "$ETC/device.key" ] && chmod 0600 "$ETC/device.key"
# The service (User=stella-kiosk) reads the config through its group and owns its key: the kiosk
# refuses a key file with group or other permission bits, or owned by another user than itself or root.
chmod 0750 "$ETC"
system chown "root:$USER_NAME" "$ETC" "$ETC/kiosk.toml"
[ -f "$ETC/device.key" ] && system chown "$USER_NAME:$USER_NAME" "$ETC/device.key"
system chown "$USER_NAME:$USER_NAME" "$STATE"

READY_TO_START=1
if [ -x "$OPT/.venv/bin/stella-kiosk" ]; then
  "$OPT/.venv/bin/stella-kiosk" check-config --static "$ETC/kiosk.toml" >/dev/null || exit 78
  if [ -z "$ROOT" ]; then
    # As the service user: the same checks `run` makes at start-up (key present, private and
    # readable, state directory writable, CA file loads). A failure keeps the service stopped.
    runuser -u "$USER_NAME" -- "$OPT/.venv/bin/stella-kiosk" check-config "$ETC/kiosk.toml" >/dev/null \
      || READY_TO_START=0
  fi
fi

say "systemd unit"
install -m 0644 "$SRC/systemd/stella-kiosk.service" "$UNIT_DIR/stella-kiosk.service"
# The updater does nothing until [updates] enabled = true in the config.
install -m 0644 "$SRC/systemd/stella-kiosk-updater.service" "$UNIT_DIR/stella-kiosk-updater.service"
# Without systemd running (a chroot preparing an SD card image) there is no manager to reload or
# start: enabling still works (it only makes links), and the service starts at the next boot.
SYSTEMD_RUNNING=1
if [ -z "$ROOT" ] && [ ! -d /run/systemd/system ]; then SYSTEMD_RUNNING=0; fi
[ "$SYSTEMD_RUNNING" = 0 ] || system systemctl daemon-reload
if [ "$ENABLE" = 1 ]; then
  system systemctl enable stella-kiosk.service stella-kiosk-updater.service
  if [ "$SYSTEMD_RUNNING" = 0 ]; then
    say "systemd is not running here (a chroot or image build): the service starts at the next boot"
  elif [ "$READY_TO_START" = 1 ]; then
    system systemctl restart stella-kiosk.service stella-kiosk-updater.service
  else
    say "not starting the service: fix the config errors above, then: sudo systemctl restart stella-kiosk"
  fi
fi

cat <<TXT
install-pi: done.
  config:      $ETC/kiosk.toml
  device key:  $ETC/device.key $( [ -f "$ETC/device.key" ] && echo "(present)" || echo "(MISSING: add it with --device-key-file)")
  lessons:     $STATE
  next:        sudo systemctl stop stella-kiosk && sudo -u $USER_NAME env -C /var/lib/stella-kiosk $OPT/.venv/bin/stella-kiosk doctor --config $ETC/kiosk.toml
               journalctl -u stella-kiosk -f
TXT
