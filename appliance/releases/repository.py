"""A TUF repository of kiosk releases: signing offline (root, targets) and keeping it fresh online
(snapshot, timestamp).

Why this split of keys: the keys that say *what* a kiosk may install (root: who signs what; targets:
which files) never touch a networked machine, so a stolen companion cannot make kiosks install
anything; the companion only holds the key that says "this is the current state" (snapshot and
timestamp), which it must re-sign often so that a frozen or replayed repository is noticed by its
expiry. A release is the project's wheel plus a lock of its dependencies with hashes, each a target;
``releases.json`` (also a target, so also signed) lists every release for a kiosk to choose from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from appliance.releases.keys import generate_key_file, load_signer, write_public_key

#: How long each role's signature holds. The timestamp's day is the freeze-attack bound: a kiosk offered
#: an older state than a day notices, so the companion re-signs it well within that (``refresh_timestamp``).
ROLE_DAYS = {"root": 365, "targets": 365, "snapshot": 7, "timestamp": 1}
INDEX = "releases.json"
WHEEL_NAME = re.compile(r"^stella_kiosk-(?P<version>[^-]+)-py3-none-any\.whl$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")


class ReleaseError(Exception):
    """A release or repository step refused, with the reason an admin can act on."""


@dataclass(frozen=True)
class ReleaseFiles:
    """What an admin signs: the wheel and the hash-pinned lock of its dependencies."""

    wheel: Path
    lock: Path

    @property
    def version(self) -> str:
        found = WHEEL_NAME.match(self.wheel.name)
        if not found:
            raise ReleaseError(f"{self.wheel.name} is not a stella_kiosk wheel "
                               "(stella_kiosk-<version>-py3-none-any.whl)")
        return found["version"]


def expiry(days: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)).replace(microsecond=0) + timedelta(days=days)


def parse_version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise ReleaseError(f"{text!r} is not a release version (e.g. 1.4.0)") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Whole or not at all: a companion killed mid-write leaves the old file, never half of a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def to_bytes(metadata: Metadata[Any]) -> bytes:
    return metadata.to_bytes(JSONSerializer(compact=False))


def _sign(metadata: Metadata[Any], signers: Sequence[Signer]) -> None:
    seen: set[str] = set()
    for signer in signers:
        if signer.public_key.keyid not in seen:
            seen.add(signer.public_key.keyid)
            metadata.sign(signer, append=True)


# -- offline: the admin's side ------------------------------------------------------------------


def make_root(*, root_keys: Sequence[Key], targets_keys: Sequence[Key], online_key: Key,
              signers: Sequence[Signer], previous: Metadata[Root] | None = None,
              previous_signers: Sequence[Signer] = (), threshold: int = 1,
              days: float = ROLE_DAYS["root"]) -> Metadata[Root]:
    """Root metadata version 1, or the next version for a key rotation: then it must be signed by a
    threshold of the previous root's keys too (``previous_signers``), as a kiosk checks both."""
    if not root_keys or not targets_keys:
        raise ReleaseError("root needs at least one root key and one targets key")
    if not 1 <= threshold <= len(root_keys):
        raise ReleaseError(f"a threshold of {threshold} needs at least that many root keys")
    root = Root(version=previous.signed.version + 1 if previous else 1, expires=expiry(days),
                consistent_snapshot=True)
    for key in root_keys:
        root.add_key(key, "root")
    for key in targets_keys:
        root.add_key(key, "targets")
    root.add_key(online_key, "snapshot")
    root.add_key(online_key, "timestamp")
    root.roles["root"].threshold = threshold
    metadata = Metadata(root)
    _sign(metadata, [*previous_signers, *signers])
    try:
        metadata.verify_delegate(Root.type, metadata)
        if previous is not None:
            previous.verify_delegate(Root.type, metadata)
    except RepositoryError as exc:
        raise ReleaseError(f"the new root is not signed by enough keys: {exc}") from None
    return metadata


def sign_release(release: ReleaseFiles, signer: Signer, root: Metadata[Root], out_dir: Path,
                 previous: Metadata[Targets] | None = None, days: float = ROLE_DAYS["targets"]) -> Metadata[Targets]:
    """Sign a release: targets metadata listing every release so far plus this one, written with the
    release's files to ``out_dir`` (``targets.json`` and ``targets/``) for the companion to publish."""
    version = release.version
    new = parse_version(version)
    old_targets = dict(previous.signed.targets) if previous else {}
    for name in list(old_targets):
        found = WHEEL_NAME.match(name)
        if found and parse_version(found["version"]) >= new:
            raise ReleaseError(f"release {version} is not newer than {found['version']}, already signed: "
                               "a kiosk never installs an older release as new")
    files_dir = out_dir / "targets"
    files_dir.mkdir(parents=True, exist_ok=True)
    lock_name = f"stella_kiosk-{version}.lock"
    for source, name in ((release.wheel, release.wheel.name), (release.lock, lock_name)):
        if not source.is_file():
            raise ReleaseError(f"{source} is not a file")
        shutil.copyfile(source, files_dir / name)
    targets = Targets(version=previous.signed.version + 1 if previous else 1, expires=expiry(days),
                      targets=old_targets)
    wheel = TargetFile.from_file(release.wheel.name, str(files_dir / release.wheel.name), ["sha256"])
    wheel.unrecognized_fields["custom"] = {"version": version, "lock": lock_name}
    targets.targets[wheel.path] = wheel
    targets.targets[lock_name] = TargetFile.from_file(lock_name, str(files_dir / lock_name), ["sha256"])
    index = [{"version": found["version"], "wheel": name, "lock": target.unrecognized_fields["custom"]["lock"]}
             for name, target in targets.targets.items() if (found := WHEEL_NAME.match(name))]
    index.sort(key=lambda entry: parse_version(entry["version"]))
    (files_dir / INDEX).write_text(json.dumps({"releases": index}, indent=2) + "\n")
    targets.targets[INDEX] = TargetFile.from_file(INDEX, str(files_dir / INDEX), ["sha256"])
    metadata = Metadata(targets)
    _sign(metadata, [signer])
    try:
        root.verify_delegate(Targets.type, metadata)
    except RepositoryError:
        raise ReleaseError("this targets key is not one the repository's root names for targets") from None
    write_atomically(out_dir / "targets.json", to_bytes(metadata))
    return metadata


# -- online: the companion's side ---------------------------------------------------------------


class UpdateRepository:
    """The repository a companion serves under ``directory``: ``metadata/`` (``N.root.json``,
    ``N.targets.json``, ``N.snapshot.json``, ``timestamp.json``) and ``targets/<sha256>.<name>``.

    Publishing writes the files first and ``timestamp.json`` last, each atomically: a kiosk reading
    at any moment, or a companion killed at any moment, sees the old state or the new one.
    """

    def __init__(self, directory: Path, online: Signer) -> None:
        self.directory = directory
        self.metadata_dir = directory / "metadata"
        self.targets_dir = directory / "targets"
        self.online = online

    # what is there
    def _newest(self, role: str) -> tuple[int, Path] | None:
        found = [(int(p.name.split(".", 1)[0]), p) for p in self.metadata_dir.glob(f"*.{role}.json")
                 if p.name.split(".", 1)[0].isdigit()]
        return max(found) if found else None

    def root(self) -> Metadata[Root]:
        newest = self._newest(Root.type)
        if newest is None:
            raise ReleaseError("no root metadata yet: install one signed offline (`stella-kiosk release install-root`)")
        return Metadata[Root].from_file(str(newest[1]))

    def targets(self) -> Metadata[Targets] | None:
        newest = self._newest(Targets.type)
        return Metadata[Targets].from_file(str(newest[1])) if newest else None

    def timestamp(self) -> Metadata[Timestamp] | None:
        path = self.metadata_dir / "timestamp.json"
        return Metadata[Timestamp].from_file(str(path)) if path.exists() else None

    # changes
    def install_root(self, data: bytes) -> int:
        """Take root metadata signed offline: version 1 to start, or the next version (a rotation),
        verified against the current root; the online key must be the one it names."""
        try:
            new = Metadata[Root].from_bytes(data)
        except Exception as exc:  # tuf raises several types for malformed metadata
            raise ReleaseError(f"not root metadata: {exc}") from None
        try:
            new.verify_delegate(Root.type, new)
        except RepositoryError as exc:
            raise ReleaseError(f"root is not signed by its own keys: {exc}") from None
        current = self._newest(Root.type)
        if current is None:
            if new.signed.version != 1:
                raise ReleaseError("the first root must be version 1")
        else:
            old = Metadata[Root].from_file(str(current[1]))
            if new.signed.version != old.signed.version + 1:
                raise ReleaseError(f"root version {new.signed.version} does not follow {old.signed.version}")
            try:
                old.verify_delegate(Root.type, new)
            except RepositoryError:
                raise ReleaseError("the new root is not signed by the current root's keys") from None
        for role in (Snapshot.type, Timestamp.type):
            if self.online.public_key.keyid not in new.signed.roles[role].keyids:
                raise ReleaseError(f"root does not name this companion's online key for {role}: sign it "
                                   f"with the public key from `stella-kiosk release online-key`")
        write_atomically(self.metadata_dir / f"{new.signed.version}.root.json", data)
        if current is not None and self.targets() is not None:
            self.resign()  # kiosks then see the rotation at once
        return new.signed.version

    def publish(self, signed_dir: Path) -> Metadata[Targets]:
        """Take a release signed offline (``targets.json`` and ``targets/``): verified against root, newer
        than what is published, every file matching its signed length and hash; then re-signed state."""
        try:
            new = Metadata[Targets].from_file(str(signed_dir / "targets.json"))
        except Exception as exc:
            raise ReleaseError(f"{signed_dir / 'targets.json'} is not targets metadata: {exc}") from None
        try:
            self.root().verify_delegate(Targets.type, new)
        except RepositoryError:
            raise ReleaseError("the release is not signed by a targets key the root names") from None
        current = self.targets()
        if current is not None and new.signed.version <= current.signed.version:
            raise ReleaseError(f"targets version {new.signed.version} is not newer than the published "
                               f"{current.signed.version}")
        for name, target in new.signed.targets.items():
            if not _SAFE_NAME.match(name):
                raise ReleaseError(f"target name {name!r} is not a plain file name")
            published = self.targets_dir / f"{target.hashes['sha256']}.{name}"
            if published.exists():
                continue  # an earlier release's file, already checked when it was published
            source = signed_dir / "targets" / name
            try:
                with source.open("rb") as data:
                    target.verify_length_and_hashes(data)
            except OSError:
                raise ReleaseError(f"{source} is missing") from None
            except Exception:
                raise ReleaseError(f"{source} does not match its signed length and hash") from None
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(published, source.read_bytes())
        write_atomically(self.metadata_dir / f"{new.signed.version}.targets.json",
                         (signed_dir / "targets.json").read_bytes())
        self.resign()
        return new

    def resign(self, now: datetime | None = None) -> None:
        """A new snapshot (naming the current targets) and timestamp, signed with the online key."""
        targets = self.targets()
        if targets is None:
            raise ReleaseError("nothing published yet")
        old_snapshot = self._newest(Snapshot.type)
        snapshot = Snapshot(version=old_snapshot[0] + 1 if old_snapshot else 1,
                            expires=expiry(ROLE_DAYS["snapshot"], now),
                            meta={"targets.json": MetaFile(version=targets.signed.version)})
        snapshot_md = Metadata(snapshot)
        snapshot_md.sign(self.online)
        snapshot_bytes = to_bytes(snapshot_md)
        write_atomically(self.metadata_dir / f"{snapshot.version}.snapshot.json", snapshot_bytes)
        self._sign_timestamp(snapshot.version, now)

    def refresh_timestamp(self, now: datetime | None = None) -> bool:
        """Re-sign the timestamp when less than half of its life is left (call it every hour or so);
        True when it did. Kiosks refuse a timestamp past its expiry: that is the freeze-attack guard."""
        current = self.timestamp()
        if current is None:
            return False
        now = now or datetime.now(UTC)
        left = current.signed.expires - now
        if left > timedelta(days=ROLE_DAYS["timestamp"]) / 2:
            return False
        self._sign_timestamp(current.signed.snapshot_meta.version, now)
        return True

    def _sign_timestamp(self, snapshot_version: int, now: datetime | None) -> None:
        old = self.timestamp()
        timestamp = Timestamp(version=old.signed.version + 1 if old else 1,
                              expires=expiry(ROLE_DAYS["timestamp"], now),
                              snapshot_meta=MetaFile(version=snapshot_version))
        metadata = Metadata(timestamp)
        metadata.sign(self.online)
        write_atomically(self.metadata_dir / "timestamp.json", to_bytes(metadata))

    # serving
    def file_for(self, kind: str, name: str) -> Path | None:
        """The file behind ``/updates/<kind>/<name>``, or None (never a path outside the repository)."""
        if kind == "metadata" and re.fullmatch(r"(?:[0-9]{1,9}\.(?:root|snapshot|targets)|timestamp)\.json", name):
            path = self.metadata_dir / name
        elif kind == "targets" and re.fullmatch(r"[0-9a-f]{64}\.[A-Za-z0-9][A-Za-z0-9._+-]{0,200}", name):
            path = self.targets_dir / name
        else:
            return None
        return path if path.is_file() else None


ONLINE_KEY = "online.key"


def open_repository(directory: Path, create_key: bool = False) -> UpdateRepository:
    """The repository in ``directory`` with its online key ``online.key`` (made on first use when asked,
    with its public half ``online.pub`` beside it for the admin who signs root)."""
    key_path = directory / ONLINE_KEY
    if create_key and not key_path.exists():
        write_public_key(generate_key_file(key_path), directory / "online.pub")
    return UpdateRepository(directory, load_signer(key_path))
