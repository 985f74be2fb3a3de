"""A signed update repository with a few releases, for the companion's rollout and console tests.

The admin's offline keys and the companion's online key are made in a temporary directory; the release
files are stand-ins (signing and publishing do not look inside a wheel)."""

from __future__ import annotations

from pathlib import Path

from appliance.releases.keys import generate_key_file, load_signer
from appliance.releases.repository import ReleaseFiles, make_root, open_repository, sign_release, to_bytes


def signed_repository(directory: Path, versions: list[str]) -> Path:
    """A companion's repository (its ``updates_dir``) holding ``versions``, signed and published in order."""
    keys = directory / "offline-keys"
    root_key, targets_key = generate_key_file(keys / "root.key"), generate_key_file(keys / "targets.key")
    repo = open_repository(directory / "updates", create_key=True)
    root = make_root(root_keys=[root_key], targets_keys=[targets_key], online_key=repo.online.public_key,
                     signers=[load_signer(keys / "root.key")])
    repo.install_root(to_bytes(root))
    for version in versions:
        build = directory / f"build-{version}"
        build.mkdir(parents=True)
        wheel = build / f"stella_kiosk-{version}-py3-none-any.whl"
        wheel.write_bytes(f"wheel {version} ".encode() * 100)
        lock = build / f"lock-{version}.txt"
        lock.write_text(f"numpy==2.0.0 --hash=sha256:{'ab' * 32}  # {version}\n")
        signed = directory / f"signed-{version}"
        sign_release(ReleaseFiles(wheel, lock), load_signer(keys / "targets.key"), repo.root(), signed,
                     previous=repo.targets())
        repo.publish(signed)
    return repo.directory
