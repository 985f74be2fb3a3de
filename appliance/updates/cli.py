"""`stella-kiosk update --now` (one round at once) and `stella-kiosk update --loop` (the updater service).

Why its own process (stella-kiosk-updater.service, as root): it restarts the kiosk daemon and writes
the release directories, which the daemon (an unprivileged user) must not be able to change. One
updater at a time: a lock file under the prefix, so `--now` during a scheduled round says so instead
of racing it.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import random
import sys
import time
from pathlib import Path

from appliance.config import EX_CONFIG, ConfigError, load_config

log = logging.getLogger("stella-kiosk.updater")


def update_command(args: argparse.Namespace) -> int:
    from appliance.common.logs import setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    settings = config.updates
    if args.loop and not settings.enabled:
        print(f"stella-kiosk update: updates are off in {config.source} ([updates] enabled = false)")
        return 0
    root = settings.trusted_root
    if not root.is_file():
        problem = ConfigError(config.source, "updates.trusted_root",
                              f"{root} does not exist: install the root.json the companion's releases are "
                              "signed under (docs/UPDATES.md)")
        print(f"config error: {problem}", file=sys.stderr)
        return EX_CONFIG
    setup_logging(config.kiosk.log_level)
    from appliance.updates.updater import Updater
    from appliance.updates.wiring import kiosk_parts

    settings.prefix.mkdir(parents=True, exist_ok=True)
    try:
        lock = _lock(settings.prefix / "update.lock")
    except BlockingIOError:
        print("stella-kiosk update: another update is in progress (see journalctl -u stella-kiosk-updater)",
              file=sys.stderr)
        return 1
    try:
        parts = kiosk_parts(config)
    except (OSError, ConfigError) as exc:
        print(f"stella-kiosk update: cannot start: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        while True:
            try:
                outcome = Updater(parts).run_once()
            except Exception as exc:  # the next round tries again; the state file says where it was
                log.exception("update round failed")
                outcome = f"failed: {exc}"
            print(f"stella-kiosk update: {outcome}", flush=True)
            if not args.loop:
                return 0 if not outcome.startswith(("failed", "refused", "install failed", "rollback failed")) else 1
            wait = settings.check_hours * 3600 + random.uniform(0, settings.jitter_minutes * 60)
            log.info("update: next check in %.0f minutes", wait / 60)
            time.sleep(wait)
    finally:
        os.close(lock)


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    return fd
