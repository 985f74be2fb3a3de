"""`stella-kiosk companion group list | add NAME | rename NAME NEW | delete NAME | kiosk KIOSK GROUP|- |
teacher GROUP USER [--remove]`: the console's Groups page for admins at the companion's shell.

Its own module so that cli.py stays a list of commands. Every change is written to the access log as
``cli:<system user>``, like the console's changes are under the admin's name.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Callable

from appliance.companion.access_log import record_access
from appliance.companion.db import Database, DatabaseError
from appliance.companion.storage import open_storage


def cli_actor() -> str:
    """``cli:<system user>``, as the access log names changes made at the shell."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return "cli:" + (re.sub(r"[^A-Za-z0-9._-]", "_", user)[:60] or "unknown")


def add_parser(sub: argparse._SubParsersAction, database_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``group`` command; ``database_flags`` adds the companion's --db / --db-file (one rule for
    passwords on every command)."""
    group = sub.add_parser("group", help="groups (a school, a class) own kiosks; teachers see only their groups'")
    common = argparse.ArgumentParser(add_help=False)
    database_flags(common)
    actions = group.add_subparsers(dest="group_action", required=True)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=text, parents=[common])

    action("list", "every group with its kiosks and teachers")
    action("add", "create a group").add_argument("name")
    rename = action("rename", "rename a group")
    rename.add_argument("name")
    rename.add_argument("new_name")
    action("delete", "delete a group (its kiosks then belong to no group)").add_argument("name")
    kiosk = action("kiosk", "put a kiosk in a group ('-': in no group, admins only)")
    kiosk.add_argument("kiosk")
    kiosk.add_argument("name")
    teacher = action("teacher", "put a teacher in a group (--remove: take them out)")
    teacher.add_argument("name")
    teacher.add_argument("username")
    teacher.add_argument("--remove", action="store_true")


async def group_command(args: argparse.Namespace) -> int:
    try:
        storage = await open_storage(args.db)
    except DatabaseError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return 1
    try:
        return await _run(storage.db, args)
    finally:
        await storage.close()


async def _run(db: Database, args: argparse.Namespace) -> int:
    from appliance.companion.console import groups

    action = args.group_action
    if action == "list":
        for g in await groups.list_groups(db):
            print(f"{g.name}\tkiosks: {', '.join(g.kiosks) or '-'}\tteachers: {', '.join(g.members) or '-'}")
        return 0
    try:
        if action == "kiosk":
            target = None if args.name == "-" else await _existing(db, args.name)
            await groups.assign_kiosk(db, args.kiosk, target)
            where = "no group" if target is None else f"group {target} {args.name!r}"
            subject, logged, done = f"kiosk {args.kiosk} to {where}", "assign-kiosk", f"{args.kiosk}: in {where}"
        elif action == "add":
            group_id = await groups.add_group(db, args.name)
            subject, done = f"group {group_id} {args.name.strip()!r}", f"added group {args.name.strip()}"
            logged = "add-group"
        else:
            group_id = await _existing(db, args.name)
            if action == "rename":
                await groups.rename_group(db, group_id, args.new_name)
                subject, logged = f"group {group_id} {args.name!r} -> {args.new_name.strip()!r}", "rename-group"
                done = f"renamed {args.name} to {args.new_name.strip()}"
            elif action == "delete":
                await groups.delete_group(db, group_id)
                subject, logged, done = f"group {group_id} {args.name!r}", "delete-group", f"deleted {args.name}"
            elif action == "teacher" and args.remove:
                if not await groups.remove_member(db, group_id, args.username):
                    raise groups.GroupError(f"{args.username} is not in {args.name}")
                subject, logged = f"{args.username} out of group {group_id} {args.name!r}", "remove-member"
                done = f"{args.username} is no longer in {args.name}"
            else:
                await groups.add_member(db, group_id, args.username)
                subject, logged = f"{args.username} into group {group_id} {args.name!r}", "add-member"
                done = f"{args.username} is in {args.name}"
    except groups.GroupError as exc:
        print(f"companion: {exc}; nothing was changed", file=sys.stderr)
        return 1
    await record_access(db, cli_actor(), logged, subject)
    print(done, file=sys.stderr)
    return 0


async def _existing(db: Database, name: str) -> int:
    """The id of the group named ``name``; GroupError naming the command that lists them."""
    from appliance.companion.console import groups

    group_id = await groups.group_id_by_name(db, name)
    if group_id is None:
        raise groups.GroupError(f"there is no group named {name!r} (see `companion group list`)")
    return group_id
