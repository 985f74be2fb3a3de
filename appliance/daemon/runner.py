"""`stella-kiosk run`: the kiosk daemon from its config to SIGTERM.

Why its own module: starting the daemon is an ordered chain with a promise to systemd at each step
(exit 78 for a config or a machine that restarting cannot fix, READY only once the kiosk is up and
its control socket answers, the instance lock held for the whole run), and everything it builds is
imported only here, once the config is known good, so the other commands stay light.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from appliance.config import EX_CONFIG, ConfigError, load_config
from appliance.daemon.preflight import preflight_ok

log = logging.getLogger("stella-kiosk")


def run_daemon(config_path: Path) -> int:
    """Load the config (exit 78 on any mistake), build the parts and run until SIGTERM/SIGINT."""
    from appliance.common.logs import setup_logging

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if not preflight_ok(config):  # the same machine checks as `check-config`
        return EX_CONFIG
    from appliance.daemon.installed import missing_kiosk_part
    from appliance.daemon.preflight import make_control_socket_folder

    if (problem := make_control_socket_folder(config)) is not None:
        print(f"config error: {problem}", file=sys.stderr)
        return EX_CONFIG
    if (missing := missing_kiosk_part(config)) is not None:
        print(f"stella-kiosk: cannot start: {missing}", file=sys.stderr)
        return EX_CONFIG  # restarting does not install a library
    setup_logging(config.kiosk.log_level)
    try:
        return asyncio.run(_run_daemon(config))
    except KeyboardInterrupt:
        return 0


async def _run_daemon(config: object) -> int:
    from appliance.config import Config
    from appliance.daemon.systemd import Notifier
    from appliance.store.lock import AlreadyRunning, InstanceLock

    assert isinstance(config, Config)
    if config.realtime.allow_loopback_ice:
        from appliance.common.net import enable_loopback_candidates  # imports aioice: only when asked

        enable_loopback_candidates()
    notifier = Notifier()
    lock = InstanceLock(config.kiosk.state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        log.error("cannot start: %s", exc)
        print(f"stella-kiosk: {exc}", file=sys.stderr)
        return EX_CONFIG  # systemd must not restart into the same conflict every few seconds
    except OSError as exc:
        print(f"stella-kiosk: cannot lock {lock.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        return await _run_locked(config, notifier)
    finally:
        lock.release()


async def _run_locked(config: object, notifier: object) -> int:
    from appliance.common.tls import companion_ssl_context
    from appliance.config import Config
    from appliance.daemon.assemble import build_kiosk
    from appliance.daemon.control import ControlServer, answers
    from appliance.daemon.parts import (
        HardwareError,
        PinFactoryError,
        build_microphone,
        build_speaker,
        select_pin_factory,
    )
    from appliance.daemon.systemd import HeldReady, Notifier
    from appliance.hardware.button import ButtonBridge
    from appliance.hardware.leds import make_status_leds
    from appliance.store.sessions import SessionStore, StoreError
    from appliance.uplink.client import CompanionClient

    assert isinstance(config, Config) and isinstance(notifier, Notifier)
    try:
        select_pin_factory(config)
    except PinFactoryError as exc:  # one line, and 78: systemd must not restart into the same board
        print(f"config error: {ConfigError(config.source, 'gpio.pin_factory', str(exc))}", file=sys.stderr)
        return EX_CONFIG
    try:
        leds = make_status_leds(config.leds)
        mic = build_microphone(config)
        speaker = build_speaker(config)
        store = SessionStore(config.kiosk.state_dir)
    except (HardwareError, StoreError) as exc:
        log.error("cannot start: %s", exc)
        print(f"stella-kiosk: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # gpiozero raises its own errors when no pins are found
        log.error("cannot start: %s", exc)
        print(f"stella-kiosk: cannot start: {exc} (no GPIO? set [gpio] pin_factory = \"mock\")",
              file=sys.stderr)
        return 1
    companion = CompanionClient(config.companion.url, config.read_device_key(), config.kiosk.id,
                                timeout_s=config.companion.timeout_s, ssl_context=companion_ssl_context(config))
    held = HeldReady(notifier)  # READY is the daemon's to say: once the kiosk is up and its socket answers
    kiosk = build_kiosk(config, companion=companion, store=store, mic=mic, speaker=speaker, leds=leds,
                        notifier=held)
    if config.audio.input == "wav" and config.audio.input_wavs:
        from appliance.daemon.scripted_learner import ScriptedLearner

        log.info("no microphone: the scripted learner says %d clip(s), one after each tutor turn",
                 len(config.audio.input_wavs))
        kiosk.observer = ScriptedLearner(mic, config.audio.input_wavs, kiosk.observer,
                                         echo_tail_s=config.audio.echo_tail_ms / 1000)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, kiosk.shutdown)
    ready = asyncio.Event()
    runner = asyncio.create_task(kiosk.run(ready))
    ready_wait = asyncio.ensure_future(ready.wait())
    await asyncio.wait({runner, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if runner.done():  # the kiosk stopped before it was ready (a bug): say so, exit non-zero
        error = runner.exception()
        log.error("the kiosk stopped while starting: %r", error)
        print(f"stella-kiosk: the kiosk stopped while starting: {error!r}", file=sys.stderr)
        return 1
    button = ButtonBridge(config.button, loop, kiosk.press, kiosk.release)
    control = ControlServer(config.kiosk.control_socket, kiosk)
    try:
        await control.start()
    except OSError as exc:  # e.g. another kiosk serves that path: run on, the button still works
        log.error("control socket %s unavailable (%s); status/press/say will not work",
                  config.kiosk.control_socket, exc)
    else:
        if not await answers(config.kiosk.control_socket):
            log.error("control socket %s does not accept connections; status/press/say will not work",
                      config.kiosk.control_socket)
    held.send_ready()
    try:
        await runner
    finally:
        await control.stop()
        button.close()
        leds.close()
        await kiosk.aclose()
        store.close()
    return 0
