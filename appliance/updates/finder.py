"""Find the release a kiosk should take and download it, verified end to end by The Update Framework.

Why each refusal is translated: TUF's exceptions are precise but terse; an admin reading the journal
must see which attack (or which mistake) was stopped and that nothing was installed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

log = logging.getLogger(__name__)

INDEX = "releases.json"
#: Bounds on what a repository may make a kiosk download before its signature is checked.
LIMITS = UpdaterConfig(root_max_length=256_000, timestamp_max_length=16_384, snapshot_max_length=256_000,
                       targets_max_length=2_000_000, max_root_rotations=32, max_delegations=8)
INDEX_MAX_BYTES = 1_000_000


class UpdateRefused(Exception):
    """The repository's answer was refused (or could not be had); nothing was installed."""


@dataclass(frozen=True)
class Release:
    """A verified release in the download cache: the wheel and its dependencies' hash-pinned lock."""

    version: str
    wheel: Path
    lock: Path


def explain(exc: Exception) -> str:
    """What an admin should read for each of TUF's refusals."""
    match exc:
        case tuf_errors.UnsignedMetadataError():
            return f"metadata not signed by the keys the kiosk trusts (unknown or wrong key): {exc}"
        case tuf_errors.BadVersionNumberError():
            return f"metadata older than what the kiosk already trusts (rollback attack?): {exc}"
        case tuf_errors.ExpiredMetadataError():
            return (f"metadata expired (frozen repository, or the companion stopped re-signing; "
                    f"check its clock and `updates` service): {exc}")
        case tuf_errors.LengthOrHashMismatchError():
            return f"a file does not match its signed length and hash (tampered or mixed metadata): {exc}"
        case tuf_errors.DownloadLengthMismatchError():
            return f"a download was longer than allowed (endless stream?): {exc}"
        case tuf_errors.DownloadHTTPError():
            return f"the companion refused a download: {exc}"
        case tuf_errors.DownloadError():
            return f"the companion could not be reached for updates: {exc}"
        case tuf_errors.RepositoryError():
            return f"the update repository's metadata was refused: {exc}"
    return f"{type(exc).__name__}: {exc}"


class ReleaseFinder:
    """One kiosk's view of its companion's update repository.

    ``state_dir/updates/metadata`` keeps the newest trusted metadata (its versions are what makes a
    replayed older repository fail); ``trusted_root`` is the root the kiosk was installed with, used
    only until it has one of its own.
    """

    def __init__(self, base_url: str, state_dir: Path, trusted_root: bytes, fetcher: FetcherInterface) -> None:
        self.base_url = base_url.rstrip("/")
        self.metadata_dir = state_dir / "updates" / "metadata"
        self.download_dir = state_dir / "updates" / "downloads"
        self.trusted_root = trusted_root
        self.fetcher = fetcher

    def _updater(self) -> Updater:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        cached = (self.metadata_dir / "root.json").exists()
        return Updater(str(self.metadata_dir), f"{self.base_url}/metadata/", str(self.download_dir),
                       f"{self.base_url}/targets/", fetcher=self.fetcher, config=LIMITS,
                       bootstrap=None if cached else self.trusted_root)

    def find(self, installed: str, wanted: str | None = None, skip: frozenset[str] = frozenset()) -> Release | None:
        """The newest signed release above ``installed`` (or exactly ``wanted``), downloaded and verified;
        None when there is none. ``skip``: versions never to take (marked bad on this kiosk). Raises
        UpdateRefused, with the reason, for every refusal."""
        try:
            return self._find(installed, wanted, skip)
        except UpdateRefused as exc:
            log.warning("update refused, nothing installed: %s", exc)
            raise

    def _find(self, installed: str, wanted: str | None, skip: frozenset[str] = frozenset()) -> Release | None:
        try:
            current = Version(installed)
        except InvalidVersion:
            raise UpdateRefused(f"the installed version {installed!r} is not a release version") from None
        try:
            updater = self._updater()
            updater.refresh()
            index = self._index(updater)
            choice = self._choose(index, current, wanted, skip)
            if choice is None:
                return None
            version, wheel_name, lock_name = choice
            wheel, lock = (self._download(updater, name) for name in (wheel_name, lock_name))
        except UpdateRefused:
            raise
        except Exception as exc:  # every TUF refusal and every fetch failure: nothing is installed
            raise UpdateRefused(explain(exc)) from None
        return Release(version, wheel, lock)

    def _download(self, updater: Updater, name: str) -> Path:
        info = updater.get_targetinfo(name)
        if info is None:
            raise UpdateRefused(f"{name} is listed in {INDEX} but not signed as a target")
        return Path(updater.find_cached_target(info) or updater.download_target(info))

    def _index(self, updater: Updater) -> list[dict[str, str]]:
        info = updater.get_targetinfo(INDEX)
        if info is None:
            return []
        if info.length > INDEX_MAX_BYTES:
            raise UpdateRefused(f"{INDEX} is signed as {info.length} bytes: more than a release list needs")
        path = self._download(updater, INDEX)
        try:
            releases = json.loads(path.read_text())["releases"]
            return [{"version": str(r["version"]), "wheel": str(r["wheel"]), "lock": str(r["lock"])}
                    for r in releases]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpdateRefused(f"{INDEX} is signed but not a release list: {exc}") from None

    @staticmethod
    def _choose(index: list[dict[str, str]], current: Version, wanted: str | None,
                skip: frozenset[str] = frozenset()) -> tuple[str, str, str] | None:
        if wanted is not None and wanted in skip:
            raise UpdateRefused(f"release {wanted} failed on this kiosk and was rolled back; it is never retried")
        versions = []
        for entry in index:
            if entry["version"] in skip:
                continue
            try:
                versions.append((Version(entry["version"]), entry))
            except InvalidVersion:
                log.warning("update: %s lists %r, not a release version: skipped", INDEX, entry["version"])
        if wanted is not None:
            matches = [(v, e) for v, e in versions if e["version"] == wanted]
            if not matches:
                raise UpdateRefused(f"release {wanted} is not among the signed releases")
            versions = matches
            if matches[0][0] <= current:
                raise UpdateRefused(f"release {wanted} is not newer than the installed {current}: "
                                    "an older release is never installed as new")
        newer = [(v, e) for v, e in versions if v > current]
        if not newer:
            return None
        _, entry = max(newer, key=lambda pair: pair[0])
        return entry["version"], entry["wheel"], entry["lock"]
