"""Packaging: declared dependencies match imports, the kiosk and the companion install apart, and an
installed package carries what its commands read (no file from the source tree)."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from appliance.daemon.services import ChildServer

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
KIOSK_ONLY = ["pyaudio", "gpiozero", "systemd", "lgpio"]
COMPANION_ONLY = ["psycopg", "psycopg_pool", "jinja2", "argon2"]
#: The web console: part of the companion extra; the companion's kiosk API starts without it.
CONSOLE = "appliance.companion.console"

# Installs a finder that refuses the top-level modules named in STELLA_TEST_BLOCK_IMPORTS, as if
# those distributions were not installed.
BLOCKER = '''
import importlib.abc, os, sys
_BLOCKED = set(filter(None, os.environ.get("STELLA_TEST_BLOCK_IMPORTS", "").split(",")))
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed)", name=name)
sys.meta_path.insert(0, _Blocker())
'''


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalize(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in requirements}  # type: ignore[union-attr]


def third_party_imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports (anywhere, lazily too) that are neither stdlib nor ours."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("appliance", "__future__")}


@functools.cache
def distribution_of(module: str) -> str:
    found = _distributions().get(module)
    return normalize(found[0] if found else module)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def test_every_import_is_declared_in_the_right_place() -> None:
    """Guards against an imported library missing from pyproject.toml (as `av` once was) and against
    the companion's server code needing the kiosk's audio/GPIO stack."""
    project = PYPROJECT["project"]
    core = requirement_names(project["dependencies"])
    extras = {name: requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()}
    problems = []
    for path in sorted((ROOT / "appliance").rglob("*.py")):
        server_side = path.parent.name in ("companion", "simulator") and path.name != "client.py"
        allowed = core | extras["companion"] if server_side else core | extras["kiosk"] | extras["companion"]
        for module in sorted(third_party_imports(path)):
            if distribution_of(module) not in allowed:
                problems.append(f"{path.relative_to(ROOT)} imports {module} ({distribution_of(module)})")
    assert not problems, "undeclared or misplaced dependencies:\n" + "\n".join(problems)


def test_extras_split_the_two_sides() -> None:
    project = PYPROJECT["project"]
    core = requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert {"aiortc", "aioice", "aiohttp", "httpx", "numpy", "tinydb", "av"} <= core
    assert requirement_names(extras["kiosk"]) == {"pyaudio", "gpiozero", "systemd-python", "lgpio"}
    assert not requirement_names(extras["kiosk"]) & core
    assert {"psycopg", "jinja2", "argon2-cffi"} <= requirement_names(extras["companion"])
    assert not requirement_names(extras["companion"]) & core
    assert requirement_names(extras["postgres"]) == {"psycopg", "psycopg-pool"}
    # lgpio only where it has wheels and is needed: the Pi's architecture.
    assert [r for r in extras["kiosk"] if r.startswith("lgpio")] == ["lgpio>=0.2; platform_machine == 'aarch64'"]
    assert "stella-kiosk[kiosk,companion]" in extras["dev"]


def blocked_env(tmp_path: Path, blocked: list[str]) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "STELLA_TEST_BLOCK_IMPORTS": ",".join(blocked)}


def test_blocker_really_blocks(tmp_path: Path) -> None:
    """The two tests below mean something only if a blocked import really fails."""
    result = subprocess.run([sys.executable, "-c", "import gpiozero"], env=blocked_env(tmp_path, KIOSK_ONLY),
                            capture_output=True, text=True)
    assert result.returncode == 1 and "No module named 'gpiozero'" in result.stderr


@pytest.mark.timeout(60)
async def test_companion_serves_without_the_kiosk_stack(tmp_path: Path) -> None:
    """Guards against `stella-kiosk companion` importing PyAudio, gpiozero or systemd-python, which a
    district's server does not install."""
    env = blocked_env(tmp_path, KIOSK_ONLY)
    env["OPENAI_API_KEY"] = "sk-test-not-used"
    keys = tmp_path / "keys"
    keys.write_text("room-1=device-key-0123456789\n")
    keys.chmod(0o600)
    companion = ChildServer("companion", ["companion", "serve", "--port", "0", "--db", str(tmp_path / "c.db"),
                                          "--provision-file", str(keys)],
                            tmp_path / "companion.log", env=env)
    try:
        url = await companion.start()
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{url}/api/health")
        assert health.status_code == 200, health.text
    finally:
        await companion.stop()
    log = (tmp_path / "companion.log").read_text()
    assert "Traceback" not in log, log


def test_kiosk_side_imports_without_the_companion_stack(tmp_path: Path) -> None:
    """Guards against the kiosk needing the PostgreSQL driver or the web console's libraries: every
    module of the package imports with them absent (the SQLite companion the demo runs included); only the
    web console, which the companion leaves off without its libraries, needs them."""
    code = ("import pkgutil, importlib, appliance\n"
            "names = [m.name for m in pkgutil.walk_packages(appliance.__path__, 'appliance.')\n"
            f"         if not m.name.startswith({CONSOLE!r})]\n"
            "[importlib.import_module(n) for n in names]\n"
            "print(len(names))\n")
    result = subprocess.run([sys.executable, "-c", code], env=blocked_env(tmp_path, COMPANION_ONLY),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 30


@pytest.mark.timeout(180)
def test_installed_package_carries_the_demo_config(tmp_path: Path) -> None:
    """Guards against `stella-kiosk demo` reading config/ beside the source tree, which an installed
    kiosk does not have: the package, installed elsewhere and run from elsewhere, loads it."""
    target = tmp_path / "site"
    # Built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                               "demo-output", ".pytest_cache", ".ruff_cache"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)]
    build = subprocess.run(pip, capture_output=True, text=True, timeout=170)
    assert build.returncode == 0, build.stderr[-2000:]
    code = ("import appliance, appliance.demo as d\n"
            "c = d.demo_config(__import__('pathlib').Path('out').resolve(), 'http://127.0.0.1:1', 'http://127.0.0.1:2')\n"
            "print(appliance.__file__); print(c.gpio.pin_factory, c.companion.url)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    where, settings = run.stdout.splitlines()
    assert where.startswith(str(target))
    assert settings == "mock http://127.0.0.1:1"
