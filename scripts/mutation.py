#!/usr/bin/env python3
"""Mutation testing of the modules where a silent defect would lose or corrupt a learner's lesson.

Each module is mutated by mutmut (3.x) against the fast tests that cover it, in a workspace of its own
under ``build/mutation/<module>/`` (so a module's results never mix with another's, and the project's
own ``pyproject.toml`` needs no mutmut section). A mutant is *killed* when one of those tests fails on
it, *survived* when all pass: a surviving mutant is a change of behaviour that no test notices.

Some mutants cannot change behaviour at all (``equivalent``): they are listed, each with its reason,
in ``scripts/mutation-equivalent.txt`` and left out of the score::

    score = killed / (mutants - equivalent)

Run it through ``scripts/mutation.sh`` (it installs mutmut into .venv when missing)::

    bash scripts/mutation.sh sessions          # one module
    bash scripts/mutation.sh all               # every module, one after the other
    bash scripts/mutation.sh --list            # the modules and their tests
    bash scripts/mutation.sh sync --survivors  # also print the diff of every surviving mutant
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
EQUIVALENT_FILE = ROOT / "scripts" / "mutation-equivalent.txt"
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"

#: Tests left out everywhere: the 41 s crash loop (``scripts/mutate_store_write.py`` mutates the one
#: write it guards, against that test alone).
SLOW = ["--deselect", "tests/test_store.py::test_sigkill_during_writes_never_corrupts"]

#: The store's own tests and the retention, clock and re-dating tests that drive a real store; of the
#: outbox tests only the one that needs no call (the others run a whole lesson over WebRTC).
STORE_TESTS = ["tests/test_store.py", "tests/test_clock.py", "tests/test_redate.py",
               "tests/test_offline.py::test_retention_never_deletes_unsynced"]
CONVERSATION_TESTS = ["tests/test_conversation.py"]

#: Lines never mutated: a log call at a fixed level only words what happened for a person reading the
#: journal; no lesson depends on it. (``log.log(level, ...)`` and the store's ``_problem`` stay mutated:
#: their level and their words are promised to the admin.)
NOT_MUTATED = [r"^\s*log\.(debug|info|warning|error|exception)\("]


@dataclass(frozen=True)
class Module:
    name: str
    source: str
    tests: list[str]


MODULES = [
    Module("sessions", "appliance/store/sessions.py", STORE_TESTS),
    Module("repair", "appliance/store/repair.py", STORE_TESTS),
    Module("upkeep", "appliance/store/upkeep.py", STORE_TESTS),
    Module("tables", "appliance/store/tables.py", STORE_TESTS),
    Module("index", "appliance/store/index.py", ["tests/test_store.py"]),
    Module("journal", "appliance/store/journal.py", ["tests/test_store.py"]),
    Module("sync", "appliance/uplink/sync.py",
           ["tests/test_sync_rounds.py", "tests/test_sync_timing.py", "tests/test_redate.py"]),
    Module("conversation", "appliance/core/conversation.py", CONVERSATION_TESTS),
    Module("playhead", "appliance/core/playhead.py", CONVERSATION_TESTS),
    Module("responses", "appliance/core/responses.py", CONVERSATION_TESTS),
    Module("turn_taking", "appliance/core/turn_taking.py", CONVERSATION_TESTS),
    Module("recovery", "appliance/core/recovery.py", CONVERSATION_TESTS),
    Module("companion_storage", "appliance/companion/storage.py", ["tests/test_companion_db.py"]),
]
BY_NAME = {m.name: m for m in MODULES}

#: mutmut's exit codes per mutant (``mutmut.stats.status_by_exit_code``), grouped as reported here.
KILLED = {1, 3, -11, -9}  # a failing test, pytest's internal error, a crash
SURVIVED = {0}
TIMED_OUT = {36, -24, 24, 152, 255}
NO_TESTS = {5, 33}


@dataclass
class Result:
    module: str
    mutants: int
    killed: int
    survived: int
    timed_out: int
    no_tests: int
    equivalent: int
    other: int
    not_tested: int
    seconds: float
    survivors: list[str]
    stale_equivalents: list[str]

    @property
    def score(self) -> float:
        counted = self.mutants - self.equivalent
        return 100.0 * self.killed / counted if counted else 100.0


def load_equivalents() -> dict[str, str]:
    """``mutant name  reason`` per line (``#`` starts a comment line)."""
    out: dict[str, str] = {}
    if not EQUIVALENT_FILE.exists():
        return out
    for line in EQUIVALENT_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        if not reason.strip():
            sys.exit(f"mutation: {EQUIVALENT_FILE.name}: {name} needs a reason after its name")
        out[name] = reason.strip()
    return out


def mutmut_config(module: Module, jobs: int) -> str:
    """The ``[tool.mutmut]`` table of a module's workspace (TOML)."""
    selection = [*module.tests, *SLOW]

    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["appliance"]\n'
        f"only_mutate = {toml_list([module.source])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(selection)}\n"
        # -x: the first failing test kills the mutant; no cache, no coverage of hardware tests.
        'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider", "--timeout=60"]\n'
        "use_git_change_detection = false\n"
        f"do_not_mutate_patterns = {toml_list(NOT_MUTATED)}\n"
    )


def prepare(module: Module, jobs: int, again: bool) -> Path:
    """A fresh workspace: links to the code and tests, the project's pyproject.toml plus mutmut's table.

    ``again``: keep the previous run's results; only the code around the mutated module is copied anew
    (mutmut itself re-mutates the functions of the module that changed, and re-reads the tests)."""
    ws = WORK / module.name
    if again and (ws / "mutants" / module.source).exists():
        copied = ws / "mutants" / "appliance"
        for path in (ROOT / "appliance").rglob("*"):
            rel = path.relative_to(ROOT)
            if path.is_file() and "__pycache__" not in rel.parts and str(rel) != module.source:
                (copied.parent / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copied.parent / rel)
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    for name in ("appliance", "tests", "scripts", "config", "docs", "systemd", "README.md"):
        if (ROOT / name).exists():
            (ws / name).symlink_to(ROOT / name)
    (ws / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + mutmut_config(module, jobs))
    return ws


def collect(ws: Path, module: Module, equivalents: dict[str, str], seconds: float) -> Result:
    meta = ws / "mutants" / (module.source + ".meta")
    if not meta.exists():
        sys.exit(f"mutation: {module.name}: mutmut left no results ({meta} is missing); see its output above")
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    prefix = module.source.removesuffix(".py").replace("/", ".") + "."
    mine = {name: reason for name, reason in equivalents.items() if name.startswith(prefix)}
    counts = {"killed": 0, "survived": 0, "timed_out": 0, "no_tests": 0, "equivalent": 0, "other": 0,
              "not_tested": 0}
    survivors: list[str] = []
    stale: list[str] = []
    for name, code in sorted(codes.items()):
        if name in mine:
            if code in SURVIVED or code in NO_TESTS:
                counts["equivalent"] += 1
                continue
            stale.append(name)  # a test tells it apart: it was never equivalent, count it as it is
        if code in KILLED:
            counts["killed"] += 1
        elif code in SURVIVED:
            counts["survived"] += 1
            survivors.append(name)
        elif code in TIMED_OUT:
            counts["timed_out"] += 1
        elif code in NO_TESTS:
            counts["no_tests"] += 1
            survivors.append(name)
        elif code is None:
            counts["not_tested"] += 1  # a run stopped before it reached this mutant
        else:
            counts["other"] += 1
    stale += [name for name in mine if name not in codes]
    return Result(module.name, len(codes), seconds=seconds, survivors=survivors, stale_equivalents=stale, **counts)


def run_module(module: Module, jobs: int, show_survivors: bool, again: bool) -> Result:
    ws = prepare(module, jobs, again)
    names: list[str] = []
    if again:  # the listed equivalents would only survive again
        equivalents = load_equivalents()
        names = [n for n in collect(ws, module, {}, 0.0).survivors if n not in equivalents]
        print(f"== {module.name}: {len(names)} survivor(s) of the last run tested again", flush=True)
    else:
        print(f"== {module.name}: mutating {module.source} against {' '.join(module.tests)}", flush=True)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    # Again: first the mutants never tested (functions changed since), then the survivors by name.
    for batch in ([[]] if not again else [[], names] if names else [[]]):
        run = subprocess.run([str(MUTMUT), "run", "--max-children", str(jobs), *batch], cwd=ws, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        log = ws / "mutmut-run.log"
        log.write_text(run.stdout)
        if run.returncode != 0:
            print(_tail(run.stdout), file=sys.stderr)
            sys.exit(f"mutation: {module.name}: mutmut run failed (exit {run.returncode}); whole output in {log}")
    seconds = time.monotonic() - start
    runs = ws / "runs.json"  # the runs behind this workspace's verdicts: a full run, then any --again
    history = json.loads(runs.read_text()) if runs.exists() else []
    runs.write_text(json.dumps([*history, {"again": again, "seconds": round(seconds, 1)}]))
    seconds = sum(r["seconds"] for r in json.loads(runs.read_text()))
    result = collect(ws, module, load_equivalents(), seconds)
    if show_survivors:
        for name in result.survivors:
            shown = subprocess.run([str(MUTMUT), "show", name], cwd=ws, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace")
            print(shown.stdout.rstrip())
    return result


def _tail(text: str, lines: int = 40) -> str:
    clean = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\r", "\n", text)
    return "\n".join([ln for ln in clean.splitlines() if ln.strip()][-lines:])


def table(results: list[Result]) -> str:
    head = "| module | mutants | killed | survived | timed out | no tests | equivalent | score | run time |"
    rows = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        extra = f" (+{r.other} other)" if r.other else ""
        extra += f" ({r.not_tested} not tested yet)" if r.not_tested else ""
        rows.append(f"| {r.module} | {r.mutants} | {r.killed}{extra} | {r.survived} | {r.timed_out} | "
                    f"{r.no_tests} | {r.equivalent} | {r.score:.1f} % | {r.seconds / 60:.1f} min |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"module names or 'all': {', '.join(BY_NAME)}")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--again", action="store_true",
                        help="keep the last run's verdicts and test only its survivors (and changed functions) "
                             "again: quick while adding tests; the figures to quote come from a full run")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATION_JOBS", "1")),
                        help="mutants tested at once (default 1, or MUTATION_JOBS)")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: print the table of the modules' last runs (their workspaces)")
    parser.add_argument("--min-score", type=float, default=85.0,
                        help="exit 1 when a module scores lower (default 85)")
    args = parser.parse_args()
    if args.list or not args.modules:
        for m in MODULES:
            print(f"{m.name:18} {m.source:34} {' '.join(m.tests)}")
        return 0 if args.list else 2
    names = list(BY_NAME) if "all" in args.modules else args.modules
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"mutation: unknown module(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}, all",
              file=sys.stderr)
        return 2
    results = []
    for name in names:
        if args.report:
            runs = WORK / name / "runs.json"
            seconds = sum(r["seconds"] for r in json.loads(runs.read_text())) if runs.exists() else 0.0
            results.append(collect(WORK / name, BY_NAME[name], load_equivalents(), seconds))
            continue
        result = run_module(BY_NAME[name], args.jobs, args.survivors, args.again)
        results.append(result)
        print(table([result]).splitlines()[-1], flush=True)
        for stale in result.stale_equivalents:
            print(f"   note: {stale} is listed as equivalent but a test kills it or it no longer exists; "
                  f"remove it from {EQUIVALENT_FILE.name}")
        if result.survivors and not args.survivors:
            print(f"   {len(result.survivors)} survivor(s); see them with "
                  f"`cd build/mutation/{name} && ../../../.venv/bin/mutmut show NAME`:")
            for s in result.survivors:
                print(f"     {s}")
    total = sum(r.seconds for r in results)
    print()
    print(table(results))
    print(f"\nmutmut {_mutmut_version()}, {args.jobs} worker(s), {total / 60:.1f} min in all")
    low = [r.module for r in results if r.score < args.min_score]
    if low:
        print(f"below {args.min_score:.0f} %: {', '.join(low)}")
        return 1
    return 0


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    sys.exit(main())
