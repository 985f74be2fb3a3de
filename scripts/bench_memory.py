#!/usr/bin/env python3
"""Benchmark: the kiosk's memory — what each imported stack costs, and the peak of a real call.

A Pi Zero 2 W has 512 MB for everything, a Pi 3 1 GB; the kiosk's goal is a peak resident set of at most
100 MB during a call. Two parts:

  * imports: each stack the kiosk loads, alone in a fresh interpreter: resident MB it adds, and its
    import time (``-X importtime``, cumulative, ms);
  * a call: the kiosk's own code (``build_kiosk``, mock pins, a silent microphone, a null speaker)
    through real calls against the local simulator, with the resident set sampled at READY, after the
    call stack's warm-up and through the call, the process's high-water mark (VmHWM), and where the
    peak's pages are (``/proc/self/smaps``, by library).

``--as-installed`` (the default) hides the packages a kiosk install does not have (test and lint tools:
with ``rich``, ``click`` and ``pygments`` present, ``import httpx`` also loads its command-line tool,
~8.5 MB), by refusing imports of any distribution outside ``stella-kiosk[kiosk]``'s dependencies;
``--dev-venv`` measures this venv as it is.

    .venv/bin/python scripts/bench_memory.py                  # ~40 s
    .venv/bin/python scripts/bench_memory.py --calls 2 --hold 10 --dev-venv
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.abc
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

STACKS = ("numpy", "httpx", "gpiozero", "tinydb", "av", "cryptography.x509", "aiortc",
          "appliance.daemon.assemble")
"""What a kiosk imports: its own modules up to READY (``appliance.daemon.assemble``) and what they pull in,
then the call stack (``aiortc``, with PyAV and cryptography) that ``warm_up`` loads after READY."""


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def hwm_mb() -> float:
    return _status_kb("VmHWM") / 1024


def _status_kb(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def smaps_by_library() -> collections.Counter[str]:
    """Resident kB per mapping: a shared library or package by name, ``[heap]``, ``[anon]``, ``[stack]``."""
    groups: collections.Counter[str] = collections.Counter()
    name = "[anon]"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = parts[5] if len(parts) > 5 else "[anon]"
            if "/site-packages/" in name:
                name = name.split("/site-packages/")[1].split("/")[0]
            elif name.startswith("/"):
                name = os.path.basename(name)
        elif parts and parts[0] == "Rss:":
            groups[name] += int(parts[1])
    return groups


# -- hiding what an install does not have ---------------------------------------------------------


def runtime_distributions(root: str = "stella-kiosk", extras: Sequence[str] = ("kiosk",)) -> set[str]:
    """The names of every distribution ``root[extras]`` needs, transitively (markers evaluated here)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    wanted: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(root, tuple(extras))]
    while todo:
        name, active = todo.pop()
        key = _normal(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        if key in wanted and not active:
            continue
        wanted.add(key)
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in active] or [{"extra": ""}]
            applies = requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments)
            if applies and (_normal(requirement.name) not in wanted or requirement.extras):
                todo.append((requirement.name, tuple(requirement.extras)))
    return wanted


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dev_only_packages() -> list[str]:
    """Top-level packages that only test and lint tools brought into this venv."""
    from importlib.metadata import packages_distributions

    allowed = runtime_distributions()
    return sorted(top for top, dists in packages_distributions().items()
                  if not any(_normal(d) in allowed for d in dists) and top not in sys.stdlib_module_names)


class HideDevPackages(importlib.abc.MetaPathFinder):
    """Refuses imports of the given top-level packages, as if they were not installed."""

    def __init__(self, hidden: Sequence[str]) -> None:
        self.hidden = set(hidden)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.hidden:
            raise ModuleNotFoundError(f"{fullname} is not part of a kiosk install", name=fullname)
        return None


def hide(packages: Sequence[str]) -> None:
    sys.meta_path.insert(0, HideDevPackages(packages))


# -- part 1: imports ------------------------------------------------------------------------------


def import_cost(module: str, hidden: Sequence[str]) -> dict[str, float]:
    """Resident MB and cumulative import ms of ``module`` alone in a fresh interpreter."""
    code = ("import sys; "
            f"sys.path.insert(0, {str(ROOT / 'scripts')!r}); sys.path.insert(0, {str(ROOT)!r}); "
            f"import bench_memory as b; b.hide({list(hidden)!r}); " +
            f"before = b.rss_mb(); import {module}; "  # an import statement: importlib's own is not timed
            "print('RSS', before, b.rss_mb())")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    before, after = (float(x) for x in done.stdout.split("RSS")[1].split())
    cumulative_us = 0
    for line in done.stderr.splitlines():  # "import time: self | cumulative | name"
        cells = [c.strip() for c in line.removeprefix("import time:").split("|")]
        if len(cells) == 3 and cells[2] == module and cells[1].isdigit():
            cumulative_us = int(cells[1])
    return {"rss_mb": after - before, "import_ms": cumulative_us / 1000}


# -- part 2: a call -------------------------------------------------------------------------------


async def call_peak(calls: int, hold_s: float) -> dict[str, Any]:
    import bench_quota
    from bench_stack import BenchServices

    from appliance.common.net import enable_loopback_candidates

    enable_loopback_candidates()
    figures: dict[str, Any] = {"start_mb": rss_mb()}
    peak = {"mb": 0.0, "where": collections.Counter[str]()}

    async def sample() -> None:
        while True:
            now = rss_mb()
            if now > peak["mb"]:
                peak["mb"], peak["where"] = now, smaps_by_library()
            await asyncio.sleep(0.1)

    with tempfile.TemporaryDirectory() as tmp:
        services = BenchServices(Path(tmp))
        await services.start()
        sampler = asyncio.create_task(sample())
        try:
            cap_dir = Path(tmp) / "no-cap"  # the memory bench caps no CPU: a directory stands in for the cgroup
            cap_dir.mkdir()
            results = await bench_quota.kiosk_side(services.kiosk_settings(), bench_quota.CpuCap(cap_dir, 1),
                                                   calls, hold_s, services.api_key)
        finally:
            sampler.cancel()
            await services.stop()
    figures.update(peak_mb=peak["mb"], hwm_mb=hwm_mb(), calls=len(results),
                   where={name: round(kb / 1024, 1) for name, kb in peak["where"].most_common(12)})
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--hold", type=float, default=8.0, help="seconds each call is held")
    parser.add_argument("--dev-venv", action="store_true", help="measure this venv as it is (test tools too)")
    parser.add_argument("--skip-imports", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--hidden", help=argparse.SUPPRESS)  # the call's own process: these packages hidden
    args = parser.parse_args()
    if args.hidden is not None:
        hide([name for name in args.hidden.split(",") if name])
        print(json.dumps(asyncio.run(call_peak(args.calls, args.hold))))
        return 0
    as_installed = not args.dev_venv
    report: dict[str, Any] = {"as_installed": as_installed}
    hidden = dev_only_packages() if as_installed else []
    if as_installed:
        print(f"as installed: {len(hidden)} packages of test and lint tools hidden "
              f"({', '.join(h for h in hidden if h in ('rich', 'click', 'pygments', 'pytest'))}, …)")
    if not args.skip_imports:
        print(f"{'stack':28} {'resident MB':>11} {'import ms':>10}   (each alone, in a fresh interpreter)")
        report["imports"] = {}
        for module in STACKS:
            cost = import_cost(module, hidden)
            report["imports"][module] = cost
            print(f"{module:28} {cost['rss_mb']:11.1f} {cost['import_ms']:10.0f}")
    # The call runs in a process of its own that reads no package metadata (that alone costs megabytes).
    done = subprocess.run([sys.executable, __file__, "--hidden", ",".join(hidden), "--calls", str(args.calls),
                           "--hold", str(args.hold)], capture_output=True, text=True, check=True, cwd=ROOT)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    report["call"] = figures
    print(f"\na call ({figures['calls']} × {args.hold:g} s): resident at start {figures['start_mb']:.1f} MB, "
          f"peak sampled {figures['peak_mb']:.1f} MB, high-water mark (VmHWM) {figures['hwm_mb']:.1f} MB")
    print("where the peak's pages are (MB): " + ", ".join(f"{k} {v}" for k, v in figures["where"].items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
