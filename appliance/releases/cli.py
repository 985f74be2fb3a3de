"""`stella-kiosk release …`: sign releases offline and publish them into a companion's repository.

Two machines, two sets of commands: ``keygen``, ``root`` and ``sign`` run where the root and targets
keys live (an admin's offline machine); ``online-key``, ``install-root`` and ``publish`` run on the
companion's host, on its update repository directory. docs/UPDATES.md walks through both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuf.api.metadata import Metadata, Root, Targets

from appliance.releases.keys import KeyFileError, generate_key_file, load_signer, read_public_key, write_public_key
from appliance.releases.repository import (
    ReleaseError,
    ReleaseFiles,
    make_root,
    open_repository,
    sign_release,
    to_bytes,
    write_atomically,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stella-kiosk release", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="a new Ed25519 key file (0600) and its public half (.pub)")
    keygen.add_argument("key", type=Path)
    online = sub.add_parser("online-key", help="the companion's snapshot/timestamp key (made once); prints "
                                               "where its public half is")
    online.add_argument("--repository", type=Path, required=True)
    root = sub.add_parser("root", help="sign root metadata: the first, or the next one to rotate keys")
    root.add_argument("--root-key", type=Path, action="append", required=True, help="private root key(s)")
    root.add_argument("--targets-pub", type=Path, action="append", required=True, help="targets public key(s)")
    root.add_argument("--online-pub", type=Path, required=True, help="the companion's online.pub")
    root.add_argument("--previous", type=Path, help="the current root.json, when rotating")
    root.add_argument("--previous-key", type=Path, action="append", default=[],
                      help="private key(s) of the current root, when rotating")
    root.add_argument("--threshold", type=int, default=1)
    root.add_argument("--out", type=Path, required=True)
    install = sub.add_parser("install-root", help="give a companion's repository its (next) root")
    install.add_argument("--repository", type=Path, required=True)
    install.add_argument("root", type=Path)
    sign = sub.add_parser("sign", help="sign a release (wheel + hash-pinned lock) with the targets key")
    sign.add_argument("--targets-key", type=Path, required=True)
    sign.add_argument("--root", type=Path, required=True, help="the repository's current root.json")
    sign.add_argument("--previous", type=Path, help="the targets.json last signed (its releases are kept)")
    sign.add_argument("--wheel", type=Path, required=True)
    sign.add_argument("--lock", type=Path, required=True, help="requirements with --hash lines")
    sign.add_argument("--out", type=Path, required=True)
    publish = sub.add_parser("publish", help="publish a signed release into a companion's repository")
    publish.add_argument("--repository", type=Path, required=True)
    publish.add_argument("signed", type=Path)
    return parser


def _run(args: argparse.Namespace) -> str:
    if args.command == "keygen":
        public = generate_key_file(args.key)
        write_public_key(public, args.key.with_suffix(".pub"))
        return f"wrote {args.key} (private, 0600) and {args.key.with_suffix('.pub')} (public)"
    if args.command == "online-key":
        repo = open_repository(args.repository, create_key=True)
        write_public_key(repo.online.public_key, args.repository / "online.pub")
        return f"online key ready; give {args.repository / 'online.pub'} to whoever signs root"
    if args.command == "root":
        previous = _load(args.previous, Root) if args.previous else None
        metadata = make_root(root_keys=[load_signer(k).public_key for k in args.root_key],
                             targets_keys=[read_public_key(p) for p in args.targets_pub],
                             online_key=read_public_key(args.online_pub),
                             signers=[load_signer(k) for k in args.root_key], previous=previous,
                             previous_signers=[load_signer(k) for k in args.previous_key], threshold=args.threshold)
        write_atomically(args.out, to_bytes(metadata))
        return f"wrote root version {metadata.signed.version} to {args.out}"
    if args.command == "install-root":
        repo = open_repository(args.repository)
        return f"root version {repo.install_root(_read(args.root))} installed"
    if args.command == "sign":
        targets = sign_release(ReleaseFiles(args.wheel, args.lock), load_signer(args.targets_key),
                               _load(args.root, Root), args.out,
                               previous=_load(args.previous, Targets) if args.previous else None)
        return (f"signed release {ReleaseFiles(args.wheel, args.lock).version} as targets version "
                f"{targets.signed.version} in {args.out}; copy that directory to the companion and publish it")
    repo = open_repository(args.repository)
    targets = repo.publish(args.signed)
    return f"published targets version {targets.signed.version}; kiosks see it at their next check"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"cannot read {path}: {exc.strerror}") from None


def _load(path: Path, role: type[Root] | type[Targets]) -> Metadata:
    try:
        metadata = Metadata.from_bytes(_read(path))
    except ReleaseError:
        raise
    except Exception as exc:
        raise ReleaseError(f"{path} is not TUF metadata: {exc}") from None
    if not isinstance(metadata.signed, role):
        raise ReleaseError(f"{path} is {metadata.signed.type} metadata, not {role.type}")
    return metadata


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(_run(args))
    except (ReleaseError, KeyFileError) as exc:
        print(f"stella-kiosk release: error: {exc}", file=sys.stderr)
        return 2
    return 0
