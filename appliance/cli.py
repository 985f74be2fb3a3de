"""`stella-kiosk` command line: run the daemon, the demo, the simulator, the companion, checks.

Why this module stays small: it only parses arguments and hands each command to the module that does
it (``appliance.daemon.runner`` for `run`, ``control_cli``, ``sessions_cli``, ``sync_cli``,
``doctor``), imported when that command is chosen, so `--help` or `status` never load the daemon.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance import __version__
from appliance.config import EX_CONFIG, ConfigError, load_config

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
    if argv and argv[0] == "release":
        from appliance.releases.cli import main as release_main

        return release_main(argv[1:])

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
    doctor.add_argument("--local", action="store_true",
                        help="only config, device key, state directory and store (no network, no hardware): "
                             "safe beside a running kiosk")
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
    update = sub.add_parser("update", help="check for a signed release and install it (see docs/UPDATES.md)")
    update.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    when = update.add_mutually_exclusive_group(required=True)
    when.add_argument("--now", action="store_true", help="one check and install at once, whatever the schedule")
    when.add_argument("--loop", action="store_true",
                      help="check on the [updates] schedule for ever (the stella-kiosk-updater service)")
    sub.add_parser("simulator", help="the local Realtime API simulator (see `simulator --help`)")
    sub.add_parser("companion", help="the companion service (see `companion --help`)")
    sub.add_parser("release", help="sign and publish fleet updates (see `release --help`)")
    args = parser.parse_args(argv)

    if args.command == "check-config":
        return check_config(args.config, static=args.static)
    if args.command == "run":
        from appliance.daemon.runner import run_daemon

        return run_daemon(args.config)
    if args.command == "doctor":
        from appliance.daemon.doctor import run_doctor

        return run_doctor(args.config, args.button_timeout, not args.no_hardware, local=args.local)
    if args.command == "sessions":
        from appliance.daemon.sessions_cli import sessions_command

        return sessions_command(args)
    if args.command == "update":
        from appliance.updates.cli import update_command

        return update_command(args)
    if args.command == "sync":
        from appliance.daemon.sync_cli import sync_command

        return sync_command(args)
    if args.command in ("status", "press", "hold", "stop", "say"):
        from appliance.daemon.control_cli import control_command

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


def check_config(path: Path, static: bool = False) -> int:
    """`check-config`: the TOML's text, then (unless ``static``) the machine checks `run` makes too."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if not static:
        from appliance.daemon.preflight import preflight_ok

        if not preflight_ok(config):
            return EX_CONFIG
    print(f"{path}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
