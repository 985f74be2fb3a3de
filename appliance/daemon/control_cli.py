"""`stella-kiosk status | press | hold | stop | say`: one request to the running kiosk.

Why its own module: these commands only talk to the control socket (appliance.daemon.control) and
print its answer for an admin at a terminal; they never open the store or the devices themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from appliance.config import EX_CONFIG, ConfigError, load_config


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
