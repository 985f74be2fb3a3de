"""Signed fleet updates: a release signed offline, published and served by a real companion, found and
verified by a kiosk — and every attack The Update Framework exists to stop, refused with a clear line
and nothing downloaded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from tuf.api.metadata import Metadata, Root, Targets

from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.releases.keys import KeyFileError, generate_key_file, load_signer
from appliance.releases.repository import (
    ROLE_DAYS,
    ReleaseError,
    ReleaseFiles,
    UpdateRepository,
    make_root,
    open_repository,
    sign_release,
    to_bytes,
)
from appliance.updates.fetcher import CompanionFetcher
from appliance.updates.finder import Release, ReleaseFinder, UpdateRefused

KIOSK = "kiosk-updates"


def release_files(directory: Path, version: str, payload: bytes | None = None) -> ReleaseFiles:
    """A stand-in wheel and lock (the signing path does not look inside them)."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"stella_kiosk-{version}-py3-none-any.whl"
    wheel.write_bytes(payload or f"wheel {version} ".encode() * 1000)
    lock = directory / f"lock-{version}.txt"
    lock.write_text(f"numpy==2.0.0 --hash=sha256:{'ab' * 32}  # {version}\n")
    return ReleaseFiles(wheel, lock)


@dataclass
class District:
    """An admin's offline keys, a companion serving the repository, and one kiosk's finder."""

    tmp: Path
    repo: UpdateRepository
    companion: CompanionServer
    device_key: str
    root_v1: bytes
    n: int = 0

    @property
    def keys(self) -> Path:
        return self.tmp / "offline-keys"

    def publish(self, version: str, targets_key: str = "targets.key", payload: bytes | None = None) -> None:
        """The admin signs (offline) and the companion publishes."""
        self.n += 1
        signed = self.tmp / f"signed-{self.n}"
        sign_release(release_files(self.tmp / f"build-{self.n}", version, payload),
                     load_signer(self.keys / targets_key), self.repo.root(), signed, previous=self.repo.targets())
        self.repo.publish(signed)

    def finder(self, state: str = "kiosk-state") -> ReleaseFinder:
        return ReleaseFinder(f"{self.companion.base_url}/updates", self.tmp / state, self.root_v1,
                             CompanionFetcher(self.device_key, timeout_s=5, deadline_s=10))

    async def find(self, finder: ReleaseFinder, installed: str, wanted: str | None = None) -> Release | None:
        return await asyncio.to_thread(finder.find, installed, wanted)


@pytest.fixture
async def district(tmp_path: Path) -> AsyncIterator[District]:
    keys = tmp_path / "offline-keys"
    root_key, targets_key = generate_key_file(keys / "root.key"), generate_key_file(keys / "targets.key")
    repo = open_repository(tmp_path / "companion-updates", create_key=True)
    root = make_root(root_keys=[root_key], targets_keys=[targets_key], online_key=repo.online.public_key,
                     signers=[load_signer(keys / "root.key")])
    repo.install_root(to_bytes(root))
    companion = CompanionServer(CompanionConfig(db_path=tmp_path / "companion.db", openai_base_url="http://127.0.0.1:9",
                                                updates_dir=repo.directory))
    await companion.start()
    device_key = secrets.token_urlsafe(24)
    await companion.provision(KIOSK, device_key)
    try:
        yield District(tmp_path, repo, companion, device_key, to_bytes(root))
    finally:
        await companion.stop()


def downloaded(finder: ReleaseFinder) -> list[str]:
    return sorted(p.name for p in finder.download_dir.glob("*.whl"))


async def test_a_signed_release_is_found_verified_and_downloaded(district: District) -> None:
    district.publish("0.2.0")
    finder = district.finder()
    release = await district.find(finder, "0.1.0")
    assert release is not None and release.version == "0.2.0"
    built = district.tmp / "build-1"
    assert release.wheel.read_bytes() == (built / "stella_kiosk-0.2.0-py3-none-any.whl").read_bytes()
    assert release.lock.read_text() == (built / "lock-0.2.0.txt").read_text()
    assert await district.find(finder, "0.2.0") is None  # nothing newer
    district.publish("0.3.0")
    newer = await district.find(finder, "0.2.0")
    assert newer is not None and newer.version == "0.3.0"


async def test_the_repository_is_served_only_to_a_kiosk_with_its_key(district: District) -> None:
    district.publish("0.2.0")
    finder = ReleaseFinder(f"{district.companion.base_url}/updates", district.tmp / "stranger", district.root_v1,
                           CompanionFetcher("not-a-device-key", timeout_s=5))
    with pytest.raises(UpdateRefused, match="refused a download"):
        await district.find(finder, "0.1.0")


async def test_a_tampered_wheel_is_refused_and_nothing_is_kept(district: District,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    district.publish("0.2.0")
    [served] = district.repo.targets_dir.glob("*.stella_kiosk-0.2.0-py3-none-any.whl")
    data = bytearray(served.read_bytes())
    data[100] ^= 0xFF  # same length, one byte changed
    served.write_bytes(bytes(data))
    finder = district.finder()
    with caplog.at_level(logging.WARNING), pytest.raises(UpdateRefused, match="does not match its signed"):
        await district.find(finder, "0.1.0")
    assert "update refused, nothing installed" in caplog.text
    assert downloaded(finder) == []


async def test_a_release_signed_by_an_unknown_key_is_refused(district: District) -> None:
    """A stolen companion holds the online key, not the targets key: its own targets metadata, re-signed
    snapshot and timestamp included, is refused."""
    district.publish("0.2.0")
    finder = district.finder()
    assert await district.find(finder, "0.1.0") is not None
    rogue = load_signer(district.keys / "targets.key")  # keep its shape, use another key
    rogue_key_path = district.tmp / "rogue.key"
    generate_key_file(rogue_key_path)
    rogue = load_signer(rogue_key_path)
    current = district.repo.targets()
    assert current is not None
    forged = Metadata(Targets(version=current.signed.version + 1, expires=current.signed.expires,
                              targets=dict(current.signed.targets)))
    forged.sign(rogue)
    (district.repo.metadata_dir / f"{forged.signed.version}.targets.json").write_bytes(to_bytes(forged))
    district.repo.resign()  # the online key vouches for it: not enough
    with pytest.raises(UpdateRefused, match="not signed by the keys the kiosk trusts"):
        await district.find(finder, "0.2.0")
    with pytest.raises(ReleaseError, match="not one the repository's root names"):
        sign_release(release_files(district.tmp / "b", "0.4.0"), rogue, district.repo.root(),
                     district.tmp / "rogue-signed", previous=district.repo.targets())


async def test_an_older_state_replayed_is_refused(district: District) -> None:
    """Rollback attack: the repository's older (validly signed) timestamp served again after the kiosk
    has seen a newer one."""
    district.publish("0.2.0")
    old_timestamp = (district.repo.metadata_dir / "timestamp.json").read_bytes()
    district.publish("0.3.0")
    finder = district.finder()
    assert (await district.find(finder, "0.1.0")).version == "0.3.0"  # type: ignore[union-attr]
    (district.repo.metadata_dir / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(UpdateRefused, match="older than what the kiosk already trusts"):
        await district.find(finder, "0.2.0")


async def test_an_older_release_is_never_installed_as_new(district: District) -> None:
    district.publish("0.2.0")
    district.publish("0.3.0")
    finder = district.finder()
    with pytest.raises(UpdateRefused, match=r"not newer than the installed 0\.3\.0"):
        await district.find(finder, "0.3.0", wanted="0.2.0")
    with pytest.raises(ReleaseError, match=r"not newer than 0\.3\.0"):
        sign_release(release_files(district.tmp / "b", "0.2.5"), load_signer(district.keys / "targets.key"),
                     district.repo.root(), district.tmp / "again", previous=district.repo.targets())


async def test_a_frozen_repository_is_refused_once_its_timestamp_expires(district: District) -> None:
    """Freeze attack: a repository that stopped changing is noticed by its timestamp's expiry."""
    district.publish("0.2.0")
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    district.repo.resign(now=two_days_ago)  # what a kiosk sees when its companion is frozen in the past
    finder = district.finder()
    with pytest.raises(UpdateRefused, match="expired"):
        await district.find(finder, "0.1.0")
    assert downloaded(finder) == []
    assert district.repo.refresh_timestamp()  # the companion's hourly round re-signs it
    assert (await district.find(finder, "0.1.0")) is not None


def test_the_timestamp_is_re_signed_once_half_its_life_is_gone(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    root_key, targets_key = generate_key_file(keys / "root.key"), generate_key_file(keys / "targets.key")
    repo = open_repository(tmp_path / "repo", create_key=True)
    repo.install_root(to_bytes(make_root(root_keys=[root_key], targets_keys=[targets_key],
                                         online_key=repo.online.public_key, signers=[load_signer(keys / "root.key")])))
    sign_release(release_files(tmp_path / "b", "1.0.0"), load_signer(keys / "targets.key"), repo.root(), tmp_path / "s")
    repo.publish(tmp_path / "s")
    now = datetime.now(UTC)
    stamp = repo.timestamp()
    assert stamp is not None
    life = timedelta(days=ROLE_DAYS["timestamp"])
    assert not repo.refresh_timestamp(now + life / 2 - timedelta(minutes=5))
    assert repo.refresh_timestamp(now + life / 2 + timedelta(minutes=5))
    fresh = repo.timestamp()
    assert fresh is not None and fresh.signed.version == stamp.signed.version + 1
    assert fresh.signed.expires > stamp.signed.expires


async def test_mixed_metadata_is_refused(district: District) -> None:
    """Mix and match: a validly signed targets file of another state served under the current name."""
    district.publish("0.2.0")
    district.publish("0.3.0")
    meta = district.repo.metadata_dir
    shutil.copyfile(meta / "1.targets.json", meta / "2.targets.json")
    finder = district.finder()
    with pytest.raises(UpdateRefused, match="targets"):
        await district.find(finder, "0.1.0")
    assert downloaded(finder) == []


async def test_an_endless_stream_is_cut_at_its_bound(tmp_path: Path, district: District) -> None:
    """A hostile server answering the timestamp with bytes for ever: the kiosk stops at its limit."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"{" * 65536
        with contextlib.suppress(ConnectionError):
            while sent < 1 << 30:
                await response.write(chunk)
                sent += len(chunk)
        return response

    app = web.Application()
    app.router.add_get("/updates/metadata/{name}", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        finder = ReleaseFinder(f"http://127.0.0.1:{port}/updates", tmp_path / "k", district.root_v1,
                               CompanionFetcher("key", timeout_s=5, deadline_s=20))
        with pytest.raises(UpdateRefused, match="longer than allowed"):
            await district.find(finder, "0.1.0")
    finally:
        await runner.cleanup()
    assert sent < 64 << 20, f"the kiosk read {sent >> 20} MB before stopping"


async def test_keys_rotate_and_the_old_targets_key_stops_counting(district: District) -> None:
    """Root v2 (new root and targets keys, signed by the old and the new root keys) reaches a kiosk that
    was installed with v1; a release then signed with the old targets key is refused."""
    district.publish("0.2.0")
    finder = district.finder()
    assert (await district.find(finder, "0.1.0")) is not None
    keys = district.keys
    new_root, new_targets = generate_key_file(keys / "root-2.key"), generate_key_file(keys / "targets-2.key")
    v1 = district.repo.root()
    with pytest.raises(ReleaseError, match="not signed by enough keys"):
        make_root(root_keys=[new_root], targets_keys=[new_targets], online_key=district.repo.online.public_key,
                  signers=[load_signer(keys / "root-2.key")], previous=v1)  # the old root key must sign too
    v2 = make_root(root_keys=[new_root], targets_keys=[new_targets], online_key=district.repo.online.public_key,
                   signers=[load_signer(keys / "root-2.key")], previous=v1,
                   previous_signers=[load_signer(keys / "root.key")])
    assert district.repo.install_root(to_bytes(v2)) == 2
    district.publish("0.3.0", targets_key="targets-2.key")
    release = await district.find(finder, "0.2.0")
    assert release is not None and release.version == "0.3.0"
    fresh_kiosk = district.finder("another-kiosk")  # installed with root v1: walks to v2 itself
    assert (await district.find(fresh_kiosk, "0.1.0")).version == "0.3.0"  # type: ignore[union-attr]
    with pytest.raises(ReleaseError, match="not one the repository's root names"):
        district.publish("0.4.0", targets_key="targets.key")


def test_a_root_that_does_not_name_the_companions_key_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    root_key, targets_key = generate_key_file(keys / "root.key"), generate_key_file(keys / "targets.key")
    other_online = generate_key_file(keys / "other-online.key")
    repo = open_repository(tmp_path / "repo", create_key=True)
    root = make_root(root_keys=[root_key], targets_keys=[targets_key], online_key=other_online,
                     signers=[load_signer(keys / "root.key")])
    with pytest.raises(ReleaseError, match="online key"):
        repo.install_root(to_bytes(root))
    unsigned = Metadata(Root(version=1))
    with pytest.raises(ReleaseError, match="not signed by its own keys"):
        repo.install_root(to_bytes(unsigned))
    with pytest.raises(ReleaseError, match="not root metadata"):
        repo.install_root(b"{}")


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "targets.key"
    generate_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeyFileError, match="never overwritten"):
        generate_key_file(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signer(path)
    (tmp_path / "junk.key").write_text("not a key")
    (tmp_path / "junk.key").chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_signer(tmp_path / "junk.key")
    assert json.loads(to_bytes(Metadata(Root(version=1))))["signed"]["_type"] == "root"


async def test_a_server_that_drips_bytes_is_given_up_at_the_deadline(tmp_path: Path, district: District) -> None:
    """A few bytes now and then keep each read inside its timeout; the whole download's deadline ends it."""
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(100_000):
                await response.write(b" ")
                await asyncio.sleep(0.05)
        return response

    app = web.Application()
    app.router.add_get("/updates/metadata/{name}", drip)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        finder = ReleaseFinder(f"http://127.0.0.1:{port}/updates", tmp_path / "k", district.root_v1,
                               CompanionFetcher("key", timeout_s=5, deadline_s=1))
        with pytest.raises(UpdateRefused, match="took longer than 1 s"):
            await asyncio.wait_for(district.find(finder, "0.1.0"), 30)
    finally:
        await runner.cleanup()


def release_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "release", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


async def test_the_release_commands_sign_offline_publish_and_a_kiosk_takes_it(tmp_path: Path) -> None:
    """The admin's commands end to end, as separate processes: keys, root, a signed release, published
    into a companion's repository, served by the companion, verified by a kiosk."""
    offline, repo_dir = tmp_path / "offline", tmp_path / "repository"
    for name in ("root", "targets"):
        assert release_cli("keygen", offline / f"{name}.key").returncode == 0
    done = release_cli("online-key", "--repository", repo_dir)
    assert done.returncode == 0 and "online.pub" in done.stdout
    done = release_cli("root", "--root-key", offline / "root.key", "--targets-pub", offline / "targets.pub",
                       "--online-pub", repo_dir / "online.pub", "--out", offline / "root.json")
    assert done.returncode == 0, done.stderr
    assert release_cli("install-root", "--repository", repo_dir, offline / "root.json").returncode == 0
    files = release_files(tmp_path / "build", "0.2.0")
    done = release_cli("sign", "--targets-key", offline / "targets.key", "--root", offline / "root.json",
                       "--wheel", files.wheel, "--lock", files.lock, "--out", tmp_path / "signed")
    assert done.returncode == 0, done.stderr
    done = release_cli("publish", "--repository", repo_dir, tmp_path / "signed")
    assert done.returncode == 0 and "published targets version 1" in done.stdout, done.stderr
    done = release_cli("publish", "--repository", repo_dir, tmp_path / "signed")  # the same again
    assert done.returncode == 2 and "not newer than the published" in done.stderr
    assert "Traceback" not in done.stderr
    (offline / "targets.key").chmod(0o644)
    done = release_cli("sign", "--targets-key", offline / "targets.key", "--root", offline / "root.json",
                       "--wheel", files.wheel, "--lock", files.lock, "--out", tmp_path / "signed-2")
    assert done.returncode == 2 and "chmod 600" in done.stderr and "Traceback" not in done.stderr
    companion = CompanionServer(CompanionConfig(db_path=tmp_path / "c.db", openai_base_url="http://127.0.0.1:9",
                                                updates_dir=repo_dir))
    await companion.start()
    try:
        await companion.provision(KIOSK, "device-key-0123456789")
        trusted_root = (offline / "root.json").read_bytes()  # what the kiosk was installed with
        finder = ReleaseFinder(f"{companion.base_url}/updates", tmp_path / "kiosk", trusted_root,
                               CompanionFetcher("device-key-0123456789", timeout_s=5))
        release = await asyncio.to_thread(finder.find, "0.1.0")
    finally:
        await companion.stop()
    assert release is not None and release.wheel.read_bytes() == files.wheel.read_bytes()
