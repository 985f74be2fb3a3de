#!/usr/bin/env bash
# An arm64 Debian bookworm root (what Raspberry Pi OS Lite is built on) for proving the installer on the
# Pi's architecture without a Pi: qemu-user-static runs its aarch64 programs through binfmt_misc.
#
#   scripts/arm64-root.sh create DIR            a fresh root in DIR (the base is built once and cached)
#   scripts/arm64-root.sh run DIR -- CMD ARG..  run CMD inside DIR as root, with /proc, /sys and a
#                                               minimal /dev mounted for that command only
#   scripts/arm64-root.sh mounts DIR            list what is still mounted under DIR (nothing, normally)
#   scripts/arm64-root.sh umount DIR            unmount everything under DIR (after a killed `run`)
#
# The base (a blank "SD card": minbase + python3, systemd, sudo, CA certificates; no compiler) is cached
# outside the clone in $STELLA_ARM64_CACHE (default /var/cache/stella-kiosk), keyed by its package list,
# so it is rebuilt only when that list changes. Each `create` extracts a fresh copy and copies in this
# machine's network settings: DNS, CA certificates (a proxy that re-signs TLS needs its CA inside too),
# apt proxies and sources, pip's configuration. `run` also lends the root persistent apt-archive and pip
# caches from the same cache directory, so a warm run does not download again. Needs root, mmdebstrap,
# qemu-user-static (on a non-arm64 host) and zstd.
set -euo pipefail

SUITE=bookworm
BASE_PACKAGES=(python3 ca-certificates systemd sudo)
CACHE=${STELLA_ARM64_CACHE:-/var/cache/stella-kiosk}
# The host paths of pip configuration files, copied to the same paths in the root.
PIP_CONFIG_FILES=(/etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip")

die() { echo "arm64-root: $*" >&2; exit 1; }
say() { echo "arm64-root: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it mounts and chroots)"; }

# Whether this machine can run aarch64 programs: natively, or through a registered qemu binfmt handler.
ensure_binfmt() {
  case "$(uname -m)" in aarch64|arm64) return 0 ;; esac
  local handlers=/proc/sys/fs/binfmt_misc
  if [ ! -e "$handlers/register" ]; then
    mount -t binfmt_misc binfmt_misc "$handlers" || die "cannot mount binfmt_misc on $handlers"
  fi
  if [ ! -e "$handlers/qemu-aarch64" ]; then
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || die "$conf missing: apt-get install qemu-user-static"
    # The F flag in that entry opens the interpreter now, so it works inside any chroot.
    cat "$conf" > "$handlers/register" || die "cannot register the aarch64 binfmt handler"
  fi
  [ "$(head -n1 "$handlers/qemu-aarch64")" = enabled ] || die "the aarch64 binfmt handler is disabled"
}

# The Debian sources this machine uses (so a mirror or snapshot it is set up for is used in the root too).
host_sources() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$f" ] && grep -Eq '^[^#]*(URIs:|deb )' "$f"; then echo "$f"; return; fi
  done
}

base_tarball() {
  local key
  key=$( { echo "$SUITE"; printf '%s\n' "${BASE_PACKAGES[@]}"; } | sha256sum | cut -c1-12)
  echo "$CACHE/arm64-$SUITE-base-$key.tar.zst"
}

build_base() {
  local tarball=$1 sources
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.arm64-base.lock"
  flock 9  # two runs at once build it once
  if [ -s "$tarball" ]; then return; fi
  command -v mmdebstrap >/dev/null || die "mmdebstrap missing: apt-get install mmdebstrap"
  sources=$(host_sources)
  say "building the arm64 $SUITE base once (a few minutes): $tarball"
  local args=(--arch=arm64 --variant=minbase --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")"
              --aptopt='Acquire::Retries "3"' "$SUITE" "$tarball.part.tar.zst")
  [ -n "$sources" ] && args+=("$sources")
  mmdebstrap --quiet "${args[@]}" >&2 || { rm -f "$tarball.part.tar.zst"; die "mmdebstrap failed"; }
  mv "$tarball.part.tar.zst" "$tarball"
}

copy_network_settings() {
  local root=$1 f
  rm -f "$root/etc/resolv.conf"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  cp -L /etc/hosts "$root/etc/hosts"  # sudo looks up this machine's name
  # CA certificates: the bundle as it is now, and the local ones so update-ca-certificates keeps them.
  if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  fi
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  # apt: only the files that set proxies (others, like docker-clean hooks, would change how apt behaves).
  for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && grep -qi 'proxy' "$f" && cp "$f" "$root/etc/apt/apt.conf.d/"
  done
  for f in "${PIP_CONFIG_FILES[@]}"; do
    if [ -e "$f" ]; then
      mkdir -p "$root$(dirname "$f")"
      cp -a "$f" "$root$(dirname "$f")/"
    fi
  done
  # Wheel directories and file:// indexes on this machine's disk are not in the root: leave them out
  # (pip would warn about each one for every package it resolves).
  find "$root/etc/pip.conf" "$root/etc/xdg/pip" "$root$HOME/.config/pip" "$root$HOME/.pip" -name '*.conf' \
    -exec sed -i -E '/^[[:space:]]*(find-links|extra-index-url)[[:space:]]*=[[:space:]]*(file:|\/)/d' {} + 2>/dev/null || true
}

create() {
  local root=$1 tarball
  need_root
  ensure_binfmt
  tarball=$(base_tarball)
  build_base "$tarball"
  mkdir -p "$root"
  [ -z "$(ls -A "$root")" ] || die "$root is not empty"
  tar --zstd --numeric-owner -xpf "$tarball" -C "$root"
  copy_network_settings "$root"
  say "ready: $root"
}

mounts_under() {
  local root
  [ -d "$1" ] || return 0
  root=$(cd "$1" && pwd -P)
  # Deepest first, so nested mounts come off before their parents.
  awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

umount_all() {
  local m
  for m in $(mounts_under "$1"); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
}

run_in() {
  local root=$1; shift
  need_root
  ensure_binfmt
  [ -x "$root/usr/bin/env" ] || die "$root is not a root made by '$0 create'"
  root=$(cd "$root" && pwd -P)
  RUN_ROOT=$root
  trap 'umount_all "$RUN_ROOT"' EXIT
  mount -t proc proc "$root/proc"
  mount -t sysfs -o ro sysfs "$root/sys" 2>/dev/null || mount --rbind -o ro /sys "$root/sys"
  # A private /dev with the few nodes programs need: bind-mounting the host's /dev would let a
  # careless `rm -r` of the root delete the host's device nodes.
  mount -t tmpfs -o mode=0755,nosuid devtmp "$root/dev"
  local node
  for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
  done
  mkdir -p "$root/dev/shm" "$root/dev/pts"
  mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
  ln -sf pts/ptmx "$root/dev/ptmx"
  ln -sf /proc/self/fd "$root/dev/fd"
  # Persistent download caches, so only the first run fetches packages.
  mkdir -p "$CACHE/arm64-apt-archives/partial" "$CACHE/arm64-pip-cache" "$root/root/.cache/pip"
  mount --bind "$CACHE/arm64-apt-archives" "$root/var/cache/apt/archives"
  mount --bind "$CACHE/arm64-pip-cache" "$root/root/.cache/pip"
  local env_args=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                  LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive)
  local name
  while IFS= read -r name; do
    case "$name=${!name}" in  # this machine's local wheel directories are not in the root
      PIP_FIND_LINKS=/*|PIP_FIND_LINKS=file:*|PIP_EXTRA_INDEX_URL=/*|PIP_EXTRA_INDEX_URL=file:*) continue ;;
    esac
    env_args+=("$name=${!name}")
  done < <(compgen -e | grep -E '^(PIP_[A-Z_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|SSL_CERT_FILE|REQUESTS_CA_BUNDLE)$' || true)
  local rc=0
  chroot "$root" /usr/bin/env -i "${env_args[@]}" "$@" || rc=$?
  return "$rc"
}

command=${1:-}
case "$command" in
  create) [ $# = 2 ] || die "usage: $0 create DIR"; create "$2" ;;
  run)
    if [ $# -lt 4 ] || [ "$3" != "--" ]; then die "usage: $0 run DIR -- CMD [ARG...]"; fi
    dir=$2; shift 3; run_in "$dir" "$@" ;;
  mounts) [ $# = 2 ] || die "usage: $0 mounts DIR"; mounts_under "$2" ;;
  umount) [ $# = 2 ] || die "usage: $0 umount DIR"; need_root; umount_all "$2" ;;
  -h|--help|"") sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; [ -n "$command" ] ;;
  *) die "unknown command $command (see --help)" ;;
esac
