#!/usr/bin/env python3
"""Show that the store's crash test can see a crash: run it against a copy of the code whose atomic
write (``appliance/store/journal.py`` ``write_atomic``: temporary file, fsync, rename, directory fsync) is
replaced by an in-place write (``O_TRUNC`` on the file itself, no rename).

The test must FAIL on the mutant (exit status 0 here: mutant killed) and, with ``--also-real``, pass
on the unmutated copy. Usage::

    python scripts/mutate_store_write.py [--rounds 150] [--also-real]
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/test_store.py::test_sigkill_during_writes_never_corrupts"

IN_PLACE = '''def write_atomic(path: Path, payload: bytes, *, sync_dir: bool = True, sync_file: bool = True) -> None:
    """MUTANT: rewrite the file in place (truncate, write, fsync)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            if sync_file:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
'''


def copy_tree(dest: Path) -> None:
    for name in ("appliance", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def mutate(dest: Path) -> None:
    """Replace the body of ``write_atomic`` by the in-place write (located with ast, not by text)."""
    path = dest / "appliance" / "store" / "journal.py"
    source = path.read_text()
    func = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "write_atomic")
    lines = source.splitlines(keepends=True)
    assert func.end_lineno is not None
    path.write_text("".join(lines[: func.lineno - 1]) + IN_PLACE + "".join(lines[func.end_lineno:]))


def run(dest: Path, rounds: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(dest), STELLA_KILL_ROUNDS=str(rounds))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST]
    return subprocess.run(cmd, cwd=dest, env=env, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=150, help="kill rounds per run (default 150, as in CI)")
    parser.add_argument("--also-real", action="store_true", help="also run the unmutated copy (must pass)")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="store-mutant-") as tmp:
        mutant = Path(tmp) / "mutant"
        copy_tree(mutant)
        mutate(mutant)
        killed = run(mutant, args.rounds) != 0
        print(f"in-place write mutant: {'KILLED (the crash test failed)' if killed else 'SURVIVED'}")
        ok &= killed
        if args.also_real:
            real = Path(tmp) / "real"
            copy_tree(real)
            passed = run(real, args.rounds) == 0
            print(f"real write_atomic: {'PASSED' if passed else 'FAILED'}")
            ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
