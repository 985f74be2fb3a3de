"""`stella-kiosk sync`: send waiting lessons to the companion now.

Why its own module: the command has two ways to do it (ask the running kiosk over its socket, or,
with no kiosk answering, sync from this process under the kiosk's lock) and the second must never
write under a kiosk that still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from appliance.config import EX_CONFIG, ConfigError, load_config
from appliance.daemon.preflight import preflight_ok


def sync_command(args: argparse.Namespace) -> int:
    """Ask the running kiosk to sync now; without a running kiosk, sync from this process."""
    from appliance.daemon.control import send_command

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        reply = asyncio.run(send_command(config.kiosk.control_socket, {"command": "sync"}, timeout_s=60))
    except ConnectionError:
        return asyncio.run(_sync_here(config))
    if not reply.get("ok"):
        print(f"stella-kiosk: {reply.get('error')}", file=sys.stderr)
        return 1
    print(f"outbox: {reply.get('outbox')} lesson(s) still waiting")
    return 0 if reply.get("outbox") == 0 else 1


async def _sync_here(config: object) -> int:
    """No kiosk answered on the control socket: sync from this process, under the kiosk's lock.

    Why the lock: a kiosk may still run on this store with a socket this config does not name (the
    config was edited since it started). Sending its lessons and rewriting its index underneath it would
    lose updates; then this refuses and says so.
    """
    from appliance.common.tls import companion_ssl_context
    from appliance.config import Config
    from appliance.store.lock import AlreadyRunning, InstanceLock
    from appliance.store.sessions import SessionStore, StoreError
    from appliance.uplink.client import CompanionClient
    from appliance.uplink.sync import Syncer

    assert isinstance(config, Config)
    if not preflight_ok(config):
        return EX_CONFIG
    lock = InstanceLock(config.kiosk.state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        who = f" (pid {exc.pid})" if exc.pid else ""
        print(f"stella-kiosk: cannot sync from here: a kiosk is running on {config.kiosk.state_dir}{who} but "
              f"does not answer on {config.kiosk.control_socket}; set kiosk.control_socket in {config.source} to "
              "the running kiosk's socket, or stop it (systemctl stop stella-kiosk), then sync again; nothing "
              "was changed", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"stella-kiosk: cannot lock {lock.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        try:
            store = SessionStore(config.kiosk.state_dir)
            key = config.read_device_key()
        except (StoreError, ConfigError) as exc:
            print(f"stella-kiosk: {exc}", file=sys.stderr)
            return 1
        client = CompanionClient(config.companion.url, key, config.kiosk.id,
                                 timeout_s=config.companion.timeout_s, ssl_context=companion_ssl_context(config))
        try:
            ok = await Syncer(store, client).drain()
        finally:
            await client.aclose()
        waiting = len(store.unsynced())
        store.close()
    finally:
        lock.release()
    print(f"outbox: {waiting} lesson(s) still waiting" + ("" if ok else " (companion not reachable)"))
    return 0 if ok and waiting == 0 else 1
