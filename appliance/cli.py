"""`stella-kiosk` command line: run the daemon, the demo, the simulator, the companion, checks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from appliance import __version__
from appliance.config import EX_CONFIG, ConfigError, load_config

log = logging.getLogger("stella-kiosk")

DEFAULT_CONFIG = Path("/etc/stella-kiosk/kiosk.toml")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The simulator and the companion parse their own options.
    if argv and argv[0] == "simulator":
        from appliance.simulator.server import main as simulator_main

        return simulator_main(argv[1:])
    if argv and argv[0] == "companion":
        from appliance.companion.cli import main as companion_main

        return companion_main(argv[1:])

    parser = argparse.ArgumentParser(prog="stella-kiosk", description="Stella Kiosk, the voice English tutor.")
    parser.add_argument("--version", action="version", version=f"stella-kiosk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the kiosk daemon")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"kiosk TOML (default {DEFAULT_CONFIG})")
    check = sub.add_parser("check-config", help="validate a kiosk TOML file and what it points at, and exit")
    check.add_argument("config", type=Path)
    check.add_argument("--static", action="store_true",
                       help="check the file's text only, not the key file, state directory or CA file "
                            "on this machine (for a config not installed yet)")
    demo = sub.add_parser("demo", help="a whole simulated lesson on this machine (no hardware, no API credit)")
    demo.add_argument("--output", type=Path, default=Path("demo-output"), help="where files are written")
    demo.add_argument("--quiet", action="store_true", help="print only the summary")
    demo.add_argument("--deadline", type=float, default=120.0, metavar="S",
                      help="seconds the lesson may take before the demo gives up (default 120)")
    for verb, text in (("status", "show the running kiosk's state, lessons and outbox"),
                       ("press", "press and release the button (start or end a lesson, interrupt the tutor)"),
                       ("hold", "hold the button down for SECONDS (a long press; a turn in hold mode)"),
                       ("stop", "end the lesson in progress"),
                       ("say", "type a message to the tutor during a lesson")):
        control = sub.add_parser(verb, help=text)
        control.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="kiosk TOML (for its socket)")
        control.add_argument("--socket", type=Path, help="control socket path (overrides the config)")
        if verb == "say":
            control.add_argument("text")
        if verb == "hold":
            control.add_argument("seconds", type=float, help="how long to hold the button")
    doctor = sub.add_parser("doctor", help="check config, audio, LEDs, button, companion and clock")
    doctor.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    doctor.add_argument("--button-timeout", type=float, default=15.0,
                        help="seconds to wait for a button press (0 skips the button check)")
    doctor.add_argument("--no-hardware", action="store_true", help="skip audio, LED and button checks")
    sessions = sub.add_parser("sessions", help="lessons stored on this kiosk")
    sessions.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    sessions_sub = sessions.add_subparsers(dest="action", required=True)
    sessions_sub.add_parser("list", help="one line per lesson, with its sync state")
    show = sessions_sub.add_parser("show", help="one lesson's transcript and metrics")
    show.add_argument("session_id", help="the id or a unique prefix of it")
    export = sessions_sub.add_parser("export", help="all lessons to stdout")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    restore = sessions_sub.add_parser("import", help="add lessons recovered from the journal or an export "
                                                     "(the kiosk must be stopped)")
    restore.add_argument("file", help="a file, or - for standard input (e.g. journalctl -u stella-kiosk -o cat)")
    sync = sub.add_parser("sync", help="send waiting lessons to the companion")
    sync.add_argument("--now", action="store_true", help="try at once (the default; kept for clarity)")
    sync.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    sub.add_parser("simulator", help="the local Realtime API simulator (see `simulator --help`)")
    sub.add_parser("companion", help="the companion service (see `companion --help`)")
    args = parser.parse_args(argv)

    if args.command == "check-config":
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return EX_CONFIG
        if not args.static and not preflight_ok(config):
            return EX_CONFIG
        print(f"{args.config}: OK")
        return 0
    if args.command == "run":
        return run_daemon(args.config)
    if args.command == "doctor":
        from appliance.daemon.doctor import run_doctor

        return run_doctor(args.config, args.button_timeout, not args.no_hardware)
    if args.command == "sessions":
        return sessions_command(args)
    if args.command == "sync":
        return sync_command(args)
    if args.command in ("status", "press", "hold", "stop", "say"):
        return control_command(args)
    if args.command == "demo":
        from appliance.daemon.installed import missing_kiosk_part

        if args.deadline <= 0:
            print("stella-kiosk demo: --deadline must be a positive number of seconds", file=sys.stderr)
            return 2
        if (missing := missing_kiosk_part()) is not None:
            print(f"stella-kiosk demo: {missing}", file=sys.stderr)
            return 1
        from appliance.demo import run_demo

        return run_demo(args.output, quiet=args.quiet, deadline_s=args.deadline)
    parser.error(f"unknown command {args.command}")
    return 2


def sessions_command(args: argparse.Namespace) -> int:
    """`sessions list | show | export` only read: they open the store read-only, because a running kiosk
    owns it and a second writer (or a repair made under it) would lose its updates. `import` writes,
    so it takes the kiosk's lock first."""
    from appliance.daemon import sessions_cli
    from appliance.store.sessions import SessionStore, StoreError

    try:
        state_dir = load_config(args.config).kiosk.state_dir
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.action == "import":
        return _import_sessions(state_dir, args.file)
    try:
        store = SessionStore(state_dir, read_only=True)
    except StoreError as exc:
        print(f"stella-kiosk: {exc}", file=sys.stderr)
        return 1
    if args.action == "list":
        return sessions_cli.list_sessions(store)
    if args.action == "show":
        return sessions_cli.show_session(store, args.session_id)
    return sessions_cli.export_sessions(store, args.format)


def _import_sessions(state_dir: Path, source: str) -> int:
    """Import under the kiosk's lock, taken before the store is opened (opening may repair it): two
    writers on one store would lose each other's updates."""
    from appliance.daemon import sessions_cli
    from appliance.store.lock import AlreadyRunning, InstanceLock
    from appliance.store.sessions import SessionStore, StoreError

    lock = InstanceLock(state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"stella-kiosk: {exc}; then import again", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"stella-kiosk: cannot lock {lock.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        try:
            store = SessionStore(state_dir)
        except StoreError as exc:
            print(f"stella-kiosk: {exc}", file=sys.stderr)
            return 1
        try:
            if source == "-":
                return sessions_cli.import_sessions(store, sys.stdin)
            try:
                with open(source, encoding="utf-8", errors="replace") as lines:
                    return sessions_cli.import_sessions(store, lines)
            except OSError as exc:
                print(f"stella-kiosk: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
                return 1
        finally:
            store.close()
    finally:
        lock.release()


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


def preflight_ok(config: object) -> bool:
    """Run the start-up checks (appliance.daemon.preflight); print one `config error:` line per problem."""
    from appliance.config import Config
    from appliance.daemon.preflight import preflight

    assert isinstance(config, Config)
    problems = preflight(config)
    for problem in problems:
        print(f"config error: {problem}", file=sys.stderr)
    return not problems


def control_command(args: argparse.Namespace) -> int:
    """Send one command to the running kiosk over its control socket."""
    from appliance.daemon.control import send_command

    socket_path = args.socket
    if socket_path is None:
        try:
            socket_path = load_config(args.config).kiosk.control_socket
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return EX_CONFIG
    request: dict[str, object] = {"command": args.command}
    if args.command == "say":
        request["text"] = args.text
    if args.command == "hold":
        request["seconds"] = args.seconds
    try:
        reply = asyncio.run(send_command(socket_path, request))
    except ConnectionError as exc:
        print(f"stella-kiosk: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"stella-kiosk: {reply.get('error', 'refused')}", file=sys.stderr)
        return 1
    if args.command == "status":
        status = reply["status"]
        print(f"state:   {status['state']} (kiosk {status['kiosk_id']})")
        if status.get("clock"):
            print(f"clock:   {status['clock']}")
        lesson = status.get("lesson")
        if lesson:
            print(f"lesson:  {lesson['session_id']} ({lesson['seconds']} s, {lesson['turns']} turns)")
        print(f"outbox:  {status['outbox']} lesson(s) waiting for the companion")
        if status.get("held_in_memory"):
            print(f"held:    {status['held_in_memory']} lesson(s) held in memory: the disk refused them "
                  "(retrying; see the journal)")
        for kind, problem in (status.get("devices") or {}).items():
            print(f"device:  the {kind} is missing: {problem}")
        for problem in status.get("store_problems") or []:
            print(f"store:   {problem}")
        for recent in status.get("recent_lessons", []):
            print(f"recent:  {recent['ended_at']} {recent['end_reason']:<10} {recent['turns']} turns "
                  f"{recent['session_id']}")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
