"""`stella-kiosk companion serve | doctor | add-kiosk NAME | revoke-kiosk NAME | set-budget NAME MINUTES | export |
add-user NAME | erase (--lesson ID | --kiosk NAME) | group …`. Admin changes and exports made here are written to the
access log as ``cli:<user>``."""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import getpass
import os
import re
import secrets
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

from appliance.companion import group_cli
from appliance.companion.access_log import record_access
from appliance.companion.db import DatabaseError
from appliance.companion.dsn import has_password
from appliance.companion.edge import trusted_proxies
from appliance.companion.erasure import NothingToErase
from appliance.companion.models import CONFIG_KEYS, DEFAULT_MODELS, ModelChoice, ModelStatus, model_list
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.companion.storage import Storage, open_storage
from appliance.contract.names import LEVELS
from appliance.contract.record import is_uuid
from appliance.contract.voices import voice_problem

KIOSK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_DB = "companion.db"
DB_ENV = "STELLA_COMPANION_DB"
"""The database (a SQLite path or a postgresql:// DSN) from the environment: where a DSN with a password goes
(the service's environment file), never the command line."""
PASSWORD_ON_COMMAND_LINE = (f"--db: a database password on the command line is visible to every user of this "
                            f"machine (ps). Put the DSN in the environment variable {DB_ENV} (for the service: "
                            f"its environment file), or in a file of mode 0600 passed as --db-file FILE")


def _database_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--db", help=f"SQLite file (default {DEFAULT_DB}), or postgresql://user@host/db without a "
                                  f"password (a DSN with one: {DB_ENV} or --db-file)")
    cmd.add_argument("--db-file", metavar="FILE", help="read the SQLite path or postgresql:// DSN from the first "
                                                       "line of FILE (mode 0600: it may hold a password)")


def database_spec(flag: str | None, file: str | None) -> str | None:
    """The database named by --db-file, else --db, else $STELLA_COMPANION_DB (None: none of them). A DSN
    with a password is refused on the command line; ValueError says what to do instead."""
    if flag is not None and has_password(flag):
        raise ValueError(PASSWORD_ON_COMMAND_LINE)
    if file:
        lines = [line.strip() for line in read_private_file(file, "--db-file").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"--db-file: {file} is empty; write the SQLite path or postgresql:// DSN on its "
                             "first line")
        return lines[0]
    return flag or os.environ.get(DB_ENV) or None


def read_private_file(path: str, what: str) -> str:
    """A file that may hold secrets: a regular file readable by its owner only (like an ssh key)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{what}: {path} is not a regular file")
        if mode & 0o077:
            raise ValueError(f"{what}: {path} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 {path}")
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stella-kiosk companion",
                                     description="The companion service: plans, Realtime tokens, lesson records.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (flags override the --config file)")
    doctor = sub.add_parser("doctor", help="check the configured models upstream: one line each (ok / retiring on "
                                           "DATE / retired / not found); exit 1 if any needs attention")
    for cmd in (serve, doctor):
        _config_flags(cmd)
    serve.add_argument("--tokens-per-hour", type=int, help="per kiosk (default 60)")
    serve.add_argument("--daily-minutes", type=float, help="per-kiosk daily budget (default 0 = none)")
    serve.add_argument("--provision-file", metavar="FILE",
                       help="register kiosks at start from NAME=KEY lines (local trials and the demo); the file "
                            "must be mode 0600; '-' reads the lines from stdin")
    serve.add_argument("--provision", action="append", default=[], help=argparse.SUPPRESS)  # refused: keys in ps
    for name in ("add-kiosk", "revoke-kiosk"):
        cmd = sub.add_parser(name, help=f"{name.split('-')[0]} a kiosk's device key")
        cmd.add_argument("name")
        _database_flags(cmd)
    budget = sub.add_parser("set-budget", help="a kiosk's own daily lesson minutes ('default': the companion's "
                                               "daily_minutes; 0: no budget)")
    budget.add_argument("name")
    budget.add_argument("minutes", help="minutes per day (companion's UTC day), or 'default'")
    _database_flags(budget)
    export = sub.add_parser("export", help="every stored lesson as CSV on stdout (for teachers)")
    _database_flags(export)
    export.add_argument("--kiosk", help="only this kiosk")
    export.add_argument("--since", help="only lessons started on or after this ISO date")
    erase = sub.add_parser("erase", help="erase one lesson or every lesson of a kiosk (a parent's or school's "
                                         "request): deleted, and scrubbed from the database files; cannot be undone")
    target = erase.add_mutually_exclusive_group(required=True)
    target.add_argument("--lesson", metavar="SESSION_ID", help="the lesson's id (shown in the console)")
    target.add_argument("--kiosk", metavar="NAME", help="every lesson this kiosk delivered")
    erase.add_argument("--yes", action="store_true", help="confirm without being asked (scripts)")
    _database_flags(erase)
    add_user = sub.add_parser("add-user", help="create a web console account; the password is read from stdin "
                                                "(first line) or prompted for, never taken from the command line")
    add_user.add_argument("name")
    role = add_user.add_mutually_exclusive_group()
    role.add_argument("--admin", dest="role", action="store_const", const="admin",
                      help="may also manage kiosks, budgets and accounts")
    role.add_argument("--teacher", dest="role", action="store_const", const="teacher",
                      help="reads lessons, transcripts and usage (the default)")
    _database_flags(add_user)
    group_cli.add_parser(sub, _database_flags)
    args = parser.parse_args(argv)
    try:
        args.db = database_spec(args.db, args.db_file)
    except ValueError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return 2
    if args.command not in ("serve", "doctor"):  # these two also read the config file's db_path
        args.db = args.db or DEFAULT_DB

    if args.command == "serve":
        return serve_command(args)
    if args.command == "doctor":
        return doctor_command(args)
    if args.command == "add-user":
        return add_user_command(args)
    if args.command == "group":
        return asyncio.run(group_cli.group_command(args))
    if args.command in ("add-kiosk", "revoke-kiosk", "set-budget") and not KIOSK_ID.match(args.name):
        print(f"companion: {args.name!r} is not a kiosk name (1-64 letters, digits, '-' or '_')", file=sys.stderr)
        return 2
    if args.command == "erase":
        refused = confirm_erase(args)
        if refused is not None:
            return refused
    return asyncio.run(_database_command(args))


async def _database_command(args: argparse.Namespace) -> int:
    """add-kiosk / revoke-kiosk / set-budget / erase / export, straight on the database (the service may be
    running)."""
    try:
        storage = await open_storage(args.db)
    except DatabaseError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "add-kiosk":
            key = secrets.token_urlsafe(32)
            await storage.add_kiosk(args.name, key)
            await record_access(storage.db, group_cli.cli_actor(), "add-kiosk", f"kiosk {args.name}")
            print(key)
            print(f"device key for {args.name} (shown once; put it in the kiosk's device.key, mode 0600)",
                  file=sys.stderr)
            return 0
        if args.command == "set-budget":
            return await _set_budget(storage, args.name, args.minutes)
        if args.command == "erase":
            return await _erase(storage, args)
        if args.command == "revoke-kiosk":
            if await storage.revoke_kiosk(args.name):
                await record_access(storage.db, group_cli.cli_actor(), "revoke-kiosk", f"kiosk {args.name}")
                print(f"revoked {args.name}", file=sys.stderr)
                return 0
            print(f"companion: no active kiosk named {args.name}", file=sys.stderr)
            return 1
        writer = csv.writer(sys.stdout)
        writer.writerow(["session_id", "kiosk_id", "started_at", "ended_at", "end_reason", "duration_s",
                         "learner_turns", "tutor_turns", "est_cost_usd", "transcript"])
        exported = await storage.sessions(args.kiosk, args.since)
        described = " ".join(f"{k}={v}" for k, v in (("kiosk", args.kiosk), ("since", args.since)) if v)
        await record_access(storage.db, group_cli.cli_actor(), "export-lessons",
                            f"companion export: {described or 'all lessons'}", len(exported))
        for r in exported:
            m = r.get("metrics") or {}
            writer.writerow([r["session_id"], r["kiosk_id"], r["started_at"], r["ended_at"], r["end_reason"],
                             m.get("duration_s"), m.get("learner_turns"), m.get("tutor_turns"), m.get("est_cost_usd"),
                             " | ".join(f"{t['role']}: {t['text']}" for t in r.get("turns", []))])
        return 0
    finally:
        await storage.close()


def confirm_erase(args: argparse.Namespace) -> int | None:
    """None when the erase may go ahead; else the exit code after saying why not. Erasing cannot be undone, so
    it is confirmed by typing the lesson's id or the kiosk's name at a terminal, or with --yes in a script."""
    if args.lesson is not None and not is_uuid(args.lesson):
        print(f"companion: {args.lesson!r} is not a lesson id (a UUID, as the console shows it)", file=sys.stderr)
        return 2
    if args.kiosk is not None and not KIOSK_ID.match(args.kiosk):
        print(f"companion: {args.kiosk!r} is not a kiosk name (1-64 letters, digits, '-' or '_')", file=sys.stderr)
        return 2
    if args.yes:
        return None
    name = args.lesson or args.kiosk
    if not sys.stdin.isatty():
        print("companion: erasing cannot be undone: add --yes to confirm (or run it at a terminal)", file=sys.stderr)
        return 2
    what = f"lesson {name}" if args.lesson else f"every lesson of kiosk {name}"
    if input(f"erase {what}? This cannot be undone. Type {name} to confirm: ").strip() != name:
        print("companion: not confirmed; nothing was erased", file=sys.stderr)
        return 1
    return None


async def _erase(storage: Storage, args: argparse.Namespace) -> int:
    actor = f"cli:{_os_user()}"
    try:
        if args.lesson is not None:
            result = await storage.erase_lesson(args.lesson, actor)
        else:
            result = await storage.erase_kiosk(args.kiosk, actor)
    except NothingToErase:
        print(f"companion: no lesson {args.lesson} is stored (erased already, or never stored)", file=sys.stderr)
        return 1
    print(result.line())
    return 0 if result.left == 0 and result.scrub.complete else 1


def _os_user() -> str:
    """Who ran the command, for the record of the erase (the CLI has no console account)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def read_password(name: str) -> str | None:
    """A new password: typed twice at a terminal, else the first line of stdin (for scripts). Never argv: a
    command line is visible to every user of the machine and lands in shell history."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != first:
            print("companion: the two passwords differ; nothing was changed", file=sys.stderr)
            return None
        return first
    return sys.stdin.readline().rstrip("\r\n")


def add_user_command(args: argparse.Namespace) -> int:
    from appliance.companion.console import accounts

    try:
        accounts.check_username(args.name)
    except accounts.AccountError as exc:
        print(f"companion: {args.name!r}: {exc}", file=sys.stderr)
        return 2
    password = read_password(args.name)
    if password is None:
        return 1
    try:
        accounts.check_password(password)
    except accounts.AccountError as exc:
        print(f"companion: {exc}; nothing was changed", file=sys.stderr)
        return 2
    return asyncio.run(_add_user(args.db, args.name, password, args.role or "teacher"))


async def _add_user(db: str, name: str, password: str, role: str) -> int:
    from appliance.companion.console import accounts

    try:
        storage = await open_storage(db)
    except DatabaseError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return 1
    try:
        await accounts.add_user(storage.db, name, password, role)
        await record_access(storage.db, group_cli.cli_actor(), "add-user", f"{role} {name}")
    except accounts.AccountError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return 1
    finally:
        await storage.close()
    print(f"added {role} {name}: sign in at the companion's /console/", file=sys.stderr)
    return 0


async def _set_budget(storage: Storage, name: str, text: str) -> int:
    minutes: float | None = None
    if text != "default":
        try:
            minutes = float(text)
        except ValueError:
            minutes = -1.0
        if not 0 <= minutes <= 1440:
            print(f"companion: {text!r} is not a number of minutes between 0 and 1440, or 'default'", file=sys.stderr)
            return 2
    if not await storage.set_daily_minutes(name, minutes):
        print(f"companion: no kiosk named {name}", file=sys.stderr)
        return 1
    await record_access(storage.db, group_cli.cli_actor(), "set-budget",
                        f"kiosk {name}: " + ("default" if minutes is None else f"{minutes:g} min"))
    shown = "the companion's default (daily_minutes)" if minutes is None else \
        ("no budget" if minutes == 0 else f"{minutes:g} minutes a day")
    print(f"{name}: {shown}", file=sys.stderr)
    return 0


def read_provision_file(path: str) -> list[tuple[str, str]]:
    """NAME=KEY lines (blank lines and # comments skipped). Device keys are secrets: the file must be
    owner-only (like ssh keys), and they never go on a command line, where `ps` shows them to everyone."""
    text = sys.stdin.read() if path == "-" else read_private_file(path, "--provision-file")
    provisions = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, key = line.partition("=")
        if not sep or not KIOSK_ID.match(name.strip()) or len(key.strip()) < 16:
            raise ValueError(f"{path} line {number}: want NAME=KEY (name of letters, digits, '-' or '_'; "
                             "key of 16+ characters)")
        provisions.append((name.strip(), key.strip()))
    return provisions


def _config_flags(cmd: argparse.ArgumentParser) -> None:
    """Flags shared by `serve` and `doctor` (doctor must see the same models the service uses)."""
    def models(role: str) -> str:
        return f"comma-separated, first preferred (default {','.join(DEFAULT_MODELS[role])})"

    cmd.add_argument("--config", help="companion TOML (see config/companion.example.toml)")
    cmd.add_argument("--host", help="default 127.0.0.1; 0.0.0.0 to serve the school network")
    cmd.add_argument("--port", type=int, help="default 8700; 0 lets the system pick a free port")
    _database_flags(cmd)
    cmd.add_argument("--openai-base-url", help="OpenAI (default), a proxy, or a local `stella-kiosk simulator`")
    cmd.add_argument("--model", help="Realtime models for lessons: " + models("realtime"))
    cmd.add_argument("--transcription-model", help="models for the learner's words: " + models("transcription"))
    cmd.add_argument("--planner-model", help="models that plan lessons: " + models("planner"))
    cmd.add_argument("--voice", help="default marin")


def doctor_command(args: argparse.Namespace) -> int:
    """One line per configured model, from the upstream's own ``shutdown_date``."""
    config = config_from_environment(args)
    if isinstance(config, int):
        return config
    statuses = asyncio.run(_check_models(config))
    for status in statuses:
        print(status.line())
    return 0 if all(s.state == "ok" for s in statuses) else 1


async def _check_models(config: CompanionConfig) -> list[ModelStatus]:
    from appliance.companion.upstream import Upstream

    upstream = Upstream(config.openai_base_url, config.openai_api_key, timeout_s=config.upstream_timeout_s)
    try:
        return await ModelChoice(config.models()).check(upstream.model)
    finally:
        await upstream.aclose()


def config_from_environment(args: argparse.Namespace) -> CompanionConfig | int:
    """The service's config (key from OPENAI_API_KEY, then file, then flags), or the exit code after saying
    what is wrong (78: configuration error, as systemd's EX_CONFIG)."""
    key = os.environ.get("OPENAI_API_KEY", "")
    if not key:
        print("companion: OPENAI_API_KEY is not set (put it in the service's environment file)", file=sys.stderr)
        return 78
    try:
        return build_config(args, key)
    except ValueError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 78


def serve_command(args: argparse.Namespace) -> int:
    if args.provision:
        print("companion: --provision is no longer accepted: a key on the command line is visible to every user "
              "(ps). Write NAME=KEY lines to a file with mode 0600 and pass --provision-file FILE (or "
              "--provision-file - to read them from stdin)", file=sys.stderr)
        return 2
    try:
        provisions = read_provision_file(args.provision_file) if args.provision_file else []
    except ValueError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return 2
    config = config_from_environment(args)
    if isinstance(config, int):
        return config
    try:
        return asyncio.run(_serve(config, provisions))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"companion: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1


#: Bounds of ``model_retry_s``: not every request re-trying a retired model, and not a skip for days.
MIN_MODEL_RETRY_S, MAX_MODEL_RETRY_S = 10.0, 86400.0

#: CLI flag → CompanionConfig field.
FLAGS = {"host": "host", "port": "port", "db": "db_path", "openai_base_url": "openai_base_url",
         "model": "realtime_model", "voice": "voice", "planner_model": "planner_model",
         "transcription_model": "transcription_model", "tokens_per_hour": "tokens_per_hour",
         "daily_minutes": "daily_minutes"}


def checked_voices(source: str, key: str, value: Any) -> Any:
    """``voice`` (one GA voice name) or ``level_voices`` (a table of CEFR level → voice name), checked;
    ValueError names the file (or flag) and the key."""
    where = f"{source}: {key}: " if key else f"{source}: "
    if key != "level_voices":
        problem = voice_problem(value)
        if problem:
            raise ValueError(where + problem)
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{where}must be a table of level = voice, e.g. [level_voices] A1 = \"shimmer\"")
    for level, voice in value.items():
        if level not in LEVELS:
            raise ValueError(f"{source}: level_voices.{level[:20]}: not a level; use {', '.join(LEVELS[:-1])} or C2")
        problem = voice_problem(voice)
        if problem:
            raise ValueError(f"{source}: level_voices.{level}: {problem}")
    return dict(value)


def build_config(args: argparse.Namespace, api_key: str) -> CompanionConfig:
    """Defaults, then the TOML file, then command-line flags; ValueError names a bad key."""
    values: dict[str, Any] = {"port": 8700, "db_path": DEFAULT_DB}  # each key and value checked below
    fields = {f.name: f for f in dataclasses.fields(CompanionConfig)}
    if args.config:
        try:
            data = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{args.config}: cannot read: {exc}") from None
        for key, value in data.items():
            if key not in fields or key == "openai_api_key":
                allowed = ", ".join(k for k in fields if k != "openai_api_key")
                raise ValueError(f"{args.config}: {key}: unknown key; allowed: {allowed} "
                                 "(the API key comes from OPENAI_API_KEY only)")
            default = fields[key].default
            if key in CONFIG_KEYS.values():
                try:
                    value = model_list(value)
                except ValueError as exc:
                    example = ", ".join(f'"{m}"' for m in DEFAULT_MODELS["realtime"])
                    raise ValueError(f"{args.config}: {key}: {exc} (a name, or a list like [{example}])") from None
            elif key in ("voice", "level_voices"):
                value = checked_voices(str(args.config), key, value)
            elif key == "trust_proxy":
                try:
                    trusted_proxies(value)
                except ValueError as exc:
                    raise ValueError(f"{args.config}: {exc}") from None
                value = tuple(value) if isinstance(value, list) else value
            elif key == "db_path" and isinstance(value, str) and has_password(value) and \
                    os.stat(args.config).st_mode & 0o077:
                raise ValueError(f"{args.config}: db_path holds a password but the file is readable by others; "
                                 f"chmod 600 {args.config}, or put the DSN in {DB_ENV}")
            elif isinstance(default, bool | int | float) and not isinstance(value, type(default) | int):
                raise ValueError(f"{args.config}: {key}: {value!r} must be a {type(default).__name__}")
            values[key] = value
    for flag, field_name in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            values[field_name] = checked_voices("--voice", "", value) if flag == "voice" else value
    config = CompanionConfig(openai_api_key=api_key, **values)
    try:
        config.models()
    except ValueError as exc:
        raise ValueError(f"a model setting {exc}") from None
    retry = config.model_retry_s
    if not MIN_MODEL_RETRY_S <= retry <= MAX_MODEL_RETRY_S:  # NaN fails this too
        raise ValueError(f"model_retry_s: {retry!r} must be {MIN_MODEL_RETRY_S:g} to {MAX_MODEL_RETRY_S:g} seconds "
                         "(how long a model that failed with model_not_found is skipped)")
    return config


async def _serve(config: CompanionConfig, provisions: list[tuple[str, str]]) -> int:
    from appliance.common.httpserve import serve_until_signal
    from appliance.common.logs import setup_logging

    setup_logging("info")
    try:
        storage = await open_storage(config.db_path)
    except DatabaseError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return 1
    server = CompanionServer(config, storage)
    for name, key in provisions:
        await server.provision(name, key)
    return await serve_until_signal(server)
