"""Start-up checks of what the config points at on this machine: the device key file, the state
directory, the control socket's path and the companion's CA file.

Why a separate step from loading the TOML: these depend on the machine and the user running the
command, not on the file's text. `check-config`, `run` and `sync` call the same `preflight()`, so a
config that `check-config` passes is one `run` starts with (both exit 78 with the same lines).
Each problem is one ConfigError naming the key, the path and what to do.
"""

from __future__ import annotations

import os
import pwd
import ssl
import stat
import sys
import tempfile
from pathlib import Path

from appliance.config import Config, ConfigError

KEY = "companion.device_key_file"
SOCKET_KEY = "kiosk.control_socket"
MAX_SOCKET_PATH = 107
"""Bytes in a UNIX socket path (``sun_path`` holds 108 with the closing NUL)."""
SOCKET_EXAMPLE = "/run/stella-kiosk/control.sock"


def preflight(config: Config) -> list[ConfigError]:
    """Every problem found (empty: ready to run). Creates kiosk.state_dir when it is missing."""
    checks = (check_device_key(config), check_state_dir(config), check_control_socket(config),
              check_ca_file(config))
    return [problem for problem in checks if problem is not None]


def preflight_ok(config: Config) -> bool:
    """Run the start-up checks; print one `config error:` line per problem (the admin's view of them)."""
    problems = preflight(config)
    for problem in problems:
        print(f"config error: {problem}", file=sys.stderr)
    return not problems

def check_device_key(config: Config, euid: int | None = None) -> ConfigError | None:
    """The key file is a non-empty regular file that only its owner can read, like ssh's own keys.

    Owner: the user running the check, or root; run as root, any owner passes (root reads it anyway,
    and the service checks again as its own user at start-up). Mode: no group or other bits.
    """
    path = config.companion.device_key_file
    euid = os.geteuid() if euid is None else euid

    def problem(message: str) -> ConfigError:
        return ConfigError(config.source, KEY, message)

    try:
        info = path.stat()
    except FileNotFoundError:
        return problem(f"{path} does not exist: put this kiosk's device key there (from `stella-kiosk "
                       f"companion add-kiosk NAME` on the companion), then `chmod 600 {path}`")
    except OSError as exc:
        return problem(f"cannot read {path}: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return problem(f"{path} is not a regular file: it must be a file holding the device key")
    if euid != 0 and info.st_uid not in (euid, 0):
        return problem(f"{path} belongs to {_user(info.st_uid)}, not to {_user(euid)} who runs the kiosk "
                       f"(or root): `chown {_user(euid)} {path}`")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return problem(f"{path} has mode {mode:04o}: other users can read or change the device key; "
                       f"run `chmod 600 {path}`")
    try:
        key = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        return problem(f"{path} is not text: it must hold the device key on one line")
    except OSError as exc:
        return problem(f"cannot read {path}: {exc.strerror or exc} (it must be readable by {_user(euid)})")
    if not key:
        return problem(f"{path} is empty: put this kiosk's device key in it")
    return None


def check_state_dir(config: Config) -> ConfigError | None:
    """kiosk.state_dir is a directory this user can create files in (made when missing)."""
    state_dir = config.kiosk.state_dir
    key = "kiosk.state_dir"
    if state_dir.exists() and not state_dir.is_dir():
        return ConfigError(config.source, key, f"{state_dir} is not a directory: set kiosk.state_dir to a "
                           "directory for lessons, such as /var/lib/stella-kiosk")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return ConfigError(config.source, key, f"cannot create {state_dir}: {exc.strerror or exc}; create it "
                           f"and give it to {_user(os.geteuid())}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".preflight-", dir=state_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return ConfigError(config.source, key, f"cannot write in {state_dir}: {exc.strerror or exc}; "
                           f"`chown {_user(os.geteuid())} {state_dir}`")
    return None


def check_control_socket(config: Config) -> ConfigError | None:
    """kiosk.control_socket is a path a socket can be made at: short enough, in a folder that exists or
    can be made (no regular file on the way), and not an existing file of another kind.

    Creates nothing: the socket's folder is usually systemd's RuntimeDirectory, made when the service
    starts, so a missing folder is fine here and :func:`make_control_socket_folder` makes it at `run`.
    """
    path = config.kiosk.control_socket

    def problem(message: str) -> ConfigError:
        return ConfigError(config.source, SOCKET_KEY, message)

    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        return problem(f"{path} is too long for a UNIX socket ({size} bytes, at most {MAX_SOCKET_PATH}): "
                       f"choose a shorter path such as {SOCKET_EXAMPLE}")
    folder = path.parent
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = f"{existing} is not a directory" if existing == folder else \
            f"cannot create {folder}: {existing} is not a directory"
        return problem(f"{where}; set kiosk.control_socket to a path in a folder, such as {SOCKET_EXAMPLE}")
    if existing != folder:
        return None
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISSOCK(mode):
        return problem(f"{path} exists and is not a socket: choose another path, such as {SOCKET_EXAMPLE} "
                       "(the kiosk never replaces a file that is not its socket)")
    if not os.access(folder, os.W_OK | os.X_OK):
        return problem(f"cannot create the socket in {folder}: permission denied; "
                       f"`chown {_user(os.geteuid())} {folder}`")
    return None


def make_control_socket_folder(config: Config) -> ConfigError | None:
    """Make kiosk.control_socket's folder (at `run`, after :func:`check_control_socket` passed)."""
    folder = config.kiosk.control_socket.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return ConfigError(config.source, SOCKET_KEY, f"cannot create {folder}: {exc.strerror or exc}; create "
                           f"it and give it to {_user(os.geteuid())}, or choose another path such as "
                           f"{SOCKET_EXAMPLE}")
    return None


def check_ca_file(config: Config) -> ConfigError | None:
    """companion.ca_file, when set, is a readable PEM file of CA certificates."""
    ca_file = config.companion.ca_file
    if ca_file is None:
        return None
    key = "companion.ca_file"
    if not ca_file.is_file():
        return ConfigError(config.source, key, f"{ca_file} is not a file: give the path of the school's CA "
                           "certificate (PEM, -----BEGIN CERTIFICATE-----)")
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError:
        return ConfigError(config.source, key, f"{ca_file} holds no PEM certificate: it must contain "
                           "-----BEGIN CERTIFICATE----- blocks (convert DER with `openssl x509 -inform der`)")
    except OSError as exc:
        return ConfigError(config.source, key, f"cannot read {ca_file}: {exc.strerror or exc}")
    return None


def write_key_file(path: Path, key: str) -> None:
    """Write a device key file that passes check_device_key: created 0600, never briefly readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its old mode through O_CREAT
        handle.write(key + "\n")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
