"""A copy of the lesson store taken before a switch, and the rule for using it on a rollback.

Why: the store's format is versioned (``meta.schema`` in ``sessions.json``; a new version migrates it
forward at its first start). On a rollback the previous version gets the store as the new one left it
when the format is the same, so a lesson recorded meanwhile is kept; only when the new version moved
the format on does the rollback put the copy back, and the newer store is kept aside (its lessons can
be brought back with `stella-kiosk sessions import` once the kiosk runs a version that reads them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from appliance.store.journal import fsync_dir

log = logging.getLogger(__name__)

SKIPPED = {"updates", "kiosk.lock"}
"""Not lessons: the update downloads, and the running daemon's instance lock."""


def store_schema(state_dir: Path) -> int | None:
    """The store's format version, or None when there is no store (yet) or it cannot be read."""
    try:
        data = json.loads((state_dir / "sessions.json").read_bytes())
        schema = data["meta"]["1"]["schema"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return schema if isinstance(schema, int) and not isinstance(schema, bool) else None


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIPPED or n.endswith(".tmp")}


def copy_store(state_dir: Path, copy: Path) -> None:
    """Copy the store to ``copy`` (complete or absent: built beside, then renamed)."""
    partial = copy.with_name(copy.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    if state_dir.is_dir():
        shutil.copytree(state_dir, partial, ignore=_ignore, symlinks=True)
    else:
        partial.mkdir()
    os.sync()
    shutil.rmtree(copy, ignore_errors=True)
    os.replace(partial, copy)
    fsync_dir(copy.parent)


def restore_if_moved_on(state_dir: Path, copy: Path) -> bool:
    """On a rollback: put the copy back if the store's format changed since it was taken. Idempotent (a
    rollback interrupted here does it again). True when the copy was put back."""
    if not copy.is_dir():
        return False
    before, now = store_schema(copy), store_schema(state_dir)
    if now is None or now == before:
        return False
    aside = copy.parent / f"store-set-aside-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    log.warning("update: the store's format moved from %s to %s; putting back the copy taken before the switch "
                "(the newer store is kept in %s)", before, now, aside)
    if not aside.exists():
        shutil.copytree(state_dir, aside, ignore=_ignore, symlinks=True)
    # sessions.json last: its format is what says the restore is still to do, so a rollback killed
    # half-way finds it unchanged and puts back the rest at its next start.
    files = sorted((p for p in copy.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda p: (p.relative_to(copy) == Path("sessions.json"), str(p)))
    for source in files:
        _put_back(source, state_dir / source.relative_to(copy))
    _own_like(state_dir)
    os.sync()
    return True


def _put_back(source: Path, target: Path) -> None:
    """One file back, whole or not at all (a rollback killed here does it again). Lessons the newer
    version added are left where they are: nothing is deleted."""
    if target.is_file() and target.read_bytes() == source.read_bytes():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore.tmp")
    shutil.copy2(source, tmp)
    os.replace(tmp, target)


def _own_like(state_dir: Path) -> None:
    """The updater runs as root: what it put back must belong to the kiosk's user, as the rest does."""
    info = state_dir.stat()
    if os.geteuid() != 0:
        return
    for path in [state_dir, *state_dir.rglob("*")]:
        os.lchown(path, info.st_uid, info.st_gid)
