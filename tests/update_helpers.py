"""Real releases of this project for the update tests: wheels built from this tree with a bumped version
(and deliberately broken variants), a hash-pinned lock with a real dependency from a local wheelhouse,
and release venvs built by the real installer.

Building is slow on a small machine, so each wheel and the first installed release are built once per
test session (:class:`ReleaseBuilds`) and copied into each test's prefix.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.companion import rollout
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.releases.keys import generate_key_file, load_signer
from appliance.releases.repository import (
    ReleaseFiles,
    UpdateRepository,
    make_root,
    open_repository,
    sign_release,
    to_bytes,
)
from appliance.simulator.asr import DEFAULT_PHRASES
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from appliance.updates.finder import Release
from appliance.updates.install import Installer
from appliance.updates.layout import Layout
from tests.harness import API_KEY, KIOSK_ID, LEARNER_LINES, Stack

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(sysconfig.get_paths()["purelib"])
"""This test environment's dependencies; release venvs see them after their own packages (on a kiosk
the lock installs them)."""

BROKEN = {
    "exits-at-start": ("appliance/daemon/runner.py", """

def run_daemon(config_path: Path) -> int:  # a deliberately broken release
    print("stella-kiosk: this build exits at start", file=sys.stderr)
    return 1
"""),
    "fails-doctor": ("appliance/daemon/doctor.py", """

def _broken_state_dir_check(self: Doctor) -> None:  # a deliberately broken release
    self.record("storage", False, "this build cannot use its store")


Doctor._check_state_dir = _broken_state_dir_check  # type: ignore[method-assign]
"""),
}


class ReleaseBuilds:
    """Wheels and a wheelhouse, built once per session under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.wheelhouse = root / "wheelhouse"
        self._wheels: dict[tuple[str, str], Path] = {}
        self._lock: Path | None = None

    def wheel(self, version: str, variant: str = "good") -> Path:
        key = (version, variant)
        if key not in self._wheels:
            src = self.root / f"src-{version}-{variant}"
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(ROOT / "appliance", src / "appliance",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            for name in ("pyproject.toml", "README.md"):
                shutil.copy(ROOT / name, src / name)
            pyproject = src / "pyproject.toml"
            pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', f'version = "{version}"', 1))
            init = src / "appliance" / "__init__.py"
            init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
            if variant != "good":
                module, tail = BROKEN[variant]
                with (src / module).open("a") as f:
                    f.write(tail)
            out = self.root / f"wheels-{version}-{variant}"
            _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), f"./{src.name}"], self.root)
            [self._wheels[key]] = out.glob("stella_kiosk-*.whl")
        return self._wheels[key]

    def lock(self) -> Path:
        """A lock pinning one real dependency by its hash, installable from the session's wheelhouse."""
        if self._lock is None:
            self.wheelhouse.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(self.wheelhouse),
                  "six==1.17.0"], self.root)
            [six] = self.wheelhouse.glob("six-*.whl")
            digest = hashlib.sha256(six.read_bytes()).hexdigest()
            self._lock = self.root / "lock.txt"
            self._lock.write_text(f"# dependencies of a test release\nsix==1.17.0 \\\n    --hash=sha256:{digest}\n")
        return self._lock

    def release(self, version: str, variant: str = "good") -> Release:
        return Release(version, self.wheel(version, variant), self.lock())


def _run(argv: list[str], cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS", "PIP_NO_INDEX")}
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"{' '.join(argv[2:4])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> ReleaseBuilds:
    return ReleaseBuilds(tmp_path_factory.mktemp("release-builds"))


@pytest.fixture(scope="session")
def first_release(builds: ReleaseBuilds, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release 0.2.0 installed once (a real venv) in a session prefix; tests copy it into their own."""
    prefix = tmp_path_factory.mktemp("first-release")
    with pip_from(builds.wheelhouse):
        installer(Layout(prefix)).install(builds.release("0.2.0"))
    return prefix / "releases" / "0.2.0"


def installer(layout: Layout, **kwargs: object) -> Installer:
    return Installer(layout, sys.executable, [SITE], **kwargs)  # type: ignore[arg-type]


class pip_from:  # a context manager used like a function
    """pip takes packages from ``wheelhouse`` only (as a kiosk takes them from its district mirror)."""

    def __init__(self, wheelhouse: Path) -> None:
        self.env = {"PIP_FIND_LINKS": str(wheelhouse), "PIP_NO_INDEX": "1"}
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.env.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def install_first(prefix: Path, first_release: Path) -> Layout:
    """A prefix with 0.2.0 installed and current (as scripts/install-pi.sh leaves it)."""
    layout = Layout(prefix)
    layout.releases.mkdir(parents=True, exist_ok=True)
    shutil.copytree(first_release, layout.release_dir("0.2.0"), symlinks=True)
    layout.point(layout.current, "0.2.0")
    return layout


class DaemonProcess:
    """The kiosk service in tests: `python -m appliance.cli run` from the release ``current`` names, under a
    fake service manager (a NOTIFY_SOCKET the test reads); restart = SIGTERM, wait, start again."""

    def __init__(self, layout: Layout, toml: Path, work: Path) -> None:
        self.layout = layout
        self.toml = toml
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: socket.socket | None = None
        self.is_ready = False
        self.starts = 0
        self.versions: list[str | None] = []

    def restart(self) -> None:
        self.stop()
        self.starts += 1
        path = self.work / f"notify-{self.starts}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(path))
        self.notify.setblocking(False)
        self.is_ready = False
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["NOTIFY_SOCKET"] = str(path)
        self.versions.append(self.layout.version_of(self.layout.current))
        python = self.layout.venv_bin(self.layout.current) / "python"
        log = (self.work / f"daemon-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen([str(python), "-m", "appliance.cli", "run", "--config", str(self.toml)],
                                     env=env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT)

    def _drain(self) -> None:
        if self.notify is None:
            return
        while True:
            try:
                data = self.notify.recv(4096)
            except BlockingIOError:
                return
            if b"READY=1" in data:
                self.is_ready = True

    def ready(self) -> bool:
        self._drain()
        return self.is_ready and self.proc is not None and self.proc.poll() is None

    def failed(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"the kiosk exited {self.proc.returncode} at start"
        return None

    def wait_ready(self, timeout: float = 60) -> None:
        give_up = time.monotonic() + timeout
        while not self.ready():
            assert self.failed() is None and time.monotonic() < give_up, self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.work.glob("daemon-*.log")))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.notify is not None:
            self.notify.close()
            self.notify = None


@dataclass
class District:
    stack: Stack
    repo: UpdateRepository
    keys: Path
    builds: ReleaseBuilds
    root_file: Path

    def publish(self, version: str, variant: str = "good") -> None:
        """The admin signs offline; the companion publishes it into its repository (offered, not yet
        assigned to any kiosk: see :meth:`roll_out`)."""
        release = self.builds.release(version, variant)
        signed = self.stack.tmp / f"signed-{version}"
        sign_release(ReleaseFiles(release.wheel, release.lock), load_signer(self.keys / "targets.key"),
                     self.repo.root(), signed, previous=self.repo.targets())
        self.repo.publish(signed)

    async def roll_out(self, version: str, channel: str = "stable", share: int = 100) -> None:
        """What an admin does on the console's Updates page: publish the release to a channel."""
        await rollout.publish(self.stack.companion.storage.db, channel, version, share, "admin",
                              rollout.available_versions(self.repo))


@asynccontextmanager
async def district(tmp: Path, builds: ReleaseBuilds) -> AsyncIterator[District]:
    keys = tmp / "offline-keys"
    root_key, targets_key = generate_key_file(keys / "root.key"), generate_key_file(keys / "targets.key")
    repo = open_repository(tmp / "companion-updates", create_key=True)
    root = make_root(root_keys=[root_key], targets_keys=[targets_key], online_key=repo.online.public_key,
                     signers=[load_signer(keys / "root.key")])
    repo.install_root(to_bytes(root))
    root_file = tmp / "root.json"
    root_file.write_bytes(to_bytes(root))
    simulator = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY}), event_log=tmp / "events.jsonl",
                                                  phrases=(*DEFAULT_PHRASES, *LEARNER_LINES)))
    await simulator.start()
    companion = CompanionServer(CompanionConfig(db_path=tmp / "companion.db", openai_base_url=simulator.base_url,
                                                openai_api_key=API_KEY, updates_dir=repo.directory))
    await companion.start()
    device_key = secrets.token_urlsafe(24)
    await companion.provision(KIOSK_ID, device_key)
    try:
        yield District(Stack(simulator, companion, device_key, tmp), repo, keys, builds, root_file)
    finally:
        await companion.stop()
        await simulator.stop()
