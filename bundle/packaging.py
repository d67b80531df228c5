"""Sharing a trained bundle between sites: pack it with hashes signed by its publisher, and check a received one before
anything runs.

``pack`` bumps ``version`` in ``configs/metadata.json`` (with a changelog entry), exports TorchScript with
``monai.bundle.ckpt_export``, checks the metadata (``monai.bundle.verify_metadata`` against a schema file when
one is given, else the keys model-zoo requires) and the network's input and output (``verify_net_in_out``),
writes ``large_files.yml`` (model-zoo's convention: path, URL placeholder, hash type and SHA-256 of
``models/model.pt`` and ``models/model.ts``) and zips the bundle with its weights and a manifest of every file's
SHA-256 signed with the publisher's ed25519 key (:mod:`bundle.signing`). ``verify`` unpacks a zip into a new folder
(refusing paths that leave it, links, and archives that expand past a limit) and checks the signature against the
receiving site's trusted keys, every file against the manifest (none unlisted), every hash of ``large_files.yml`` and
the metadata before the bundle is used.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from bundle.errors import InputError, InputFileError, install_excepthook
from bundle.io import atomic_write, atomic_write_json, read_json
from bundle.signing import MANIFEST, SIGNATURE, make_key, sign_manifest, verify_manifest

__all__ = [
    "LARGE_FILES",
    "REQUIRED_METADATA_KEYS",
    "file_sha256",
    "bump_version",
    "write_large_files",
    "check_metadata",
    "pack",
    "verify_package",
    "main",
]

logger = logging.getLogger(__name__)

LARGE_FILES = ("models/model.pt", "models/model.ts")
"""The weights a package carries, listed with their hashes in ``large_files.yml``."""

REQUIRED_METADATA_KEYS = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "name",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
    "intended_use",
)
"""What model-zoo's metadata schema requires, checked when no schema file is at hand (the schema's URL is not
reachable offline)."""

PACKAGED = ("configs", "bundle", "jobs", "docs", "scripts", "LICENSE", "README.md", "pyproject.toml", "large_files.yml")
"""What the zip holds besides the weights: the configs and the code they import, the federated job, the docs and the licence."""

URL_PLACEHOLDER = "https://example.invalid/lckd_brats/{name}"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise InputError(f"version must be numbers separated by dots (e.g. 0.2.0), got {version!r}.") from None


def bump_version(metadata_file: str | os.PathLike, version: str, change: str) -> dict:
    """Set ``version`` in metadata.json and add its changelog entry (newest first); other keys untouched.

    Raises:
        InputError: ``version`` not above the current one, or an empty ``change``.
    """
    metadata = read_json(metadata_file)
    current = str(metadata.get("version", "0"))
    if _version_tuple(version) <= _version_tuple(current):
        raise InputError(f"version {version} is not above the bundle's {current} ({metadata_file}); give a higher one.")
    if not change.strip():
        raise InputError("the changelog entry is empty; say what changed with --change.")
    metadata["version"] = version
    metadata["changelog"] = {version: change, **metadata.get("changelog", {})}
    atomic_write_json(metadata_file, metadata)
    return metadata


def write_large_files(bundle_root: str | os.PathLike, files: Sequence[str] = LARGE_FILES) -> Path:
    """``large_files.yml`` listing ``files`` (paths relative to ``bundle_root``) with their SHA-256."""
    root = Path(bundle_root)
    entries = [
        {
            "path": name,
            "url": URL_PLACEHOLDER.format(name=Path(name).name),
            "hash_val": file_sha256(root / name),
            "hash_type": "sha256",
        }
        for name in files
    ]
    path = root / "large_files.yml"
    text = yaml.safe_dump({"large_files": entries}, sort_keys=False)
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))
    return path


def check_metadata(metadata_file: str | os.PathLike, schema: str | os.PathLike | None = None) -> None:
    """The metadata against ``schema`` (``monai.bundle.verify_metadata``) or, without one, its required keys."""
    metadata = read_json(metadata_file)
    if schema is not None:
        if importlib.util.find_spec("jsonschema") is None:
            raise InputError("checking metadata against a schema needs jsonschema: pip install jsonschema.")
        from monai.bundle import verify_metadata

        try:
            verify_metadata(meta_file=str(metadata_file), filepath=str(schema))
        except Exception as error:  # jsonschema's ValidationError, or a schema that cannot be read
            raise InputError(f"{metadata_file} does not follow {schema}: {str(error).splitlines()[0]}") from None
        return
    missing = [key for key in REQUIRED_METADATA_KEYS if key not in metadata]
    if missing:
        raise InputError(f"{metadata_file} lacks {missing}, which a model-zoo bundle's metadata must have.")
    if metadata["version"] not in metadata["changelog"]:
        raise InputError(f"{metadata_file}: version {metadata['version']} has no changelog entry.")


def _export_and_check(root: Path, schema: str | os.PathLike | None) -> None:
    from monai.bundle import ckpt_export, verify_net_in_out

    metadata, config = root / "configs" / "metadata.json", root / "configs" / "inference.json"
    check_metadata(metadata, schema)
    checkpoint = root / "models" / "model.pt"
    if not checkpoint.is_file():
        raise InputFileError(f"{checkpoint} does not exist: train first (configs/train.json writes it), then pack.")
    overrides = {"bundle_root": str(root), "ckpt_path": str(checkpoint)}
    ckpt_export(
        "network_def",
        filepath=str(root / "models" / "model.ts"),
        ckpt_file=str(checkpoint),
        meta_file=str(metadata),
        config_file=str(config),
        **overrides,
    )
    verify_net_in_out("network_def", meta_file=str(metadata), config_file=str(config), **overrides)


PACK_BACKUP = ".metadata.before-pack.json"
"""metadata.json as it was before a pack bumped its version, at the bundle root until the zip is in place: a pack that
was killed in between is undone by the next one."""


def pack(
    bundle_root: str | os.PathLike,
    version: str,
    change: str,
    out_dir: str | os.PathLike,
    key: str | os.PathLike,
    schema: str | os.PathLike | None = None,
) -> Path:
    """Bump the version, export and check the model, write ``large_files.yml`` and zip the bundle with a manifest of
    every file's SHA-256 signed with the publisher's ``key`` (:mod:`bundle.signing`).

    Returns:
        ``<out_dir>/lckd_brats_<version>.zip``.
    """
    root = Path(bundle_root).resolve()
    metadata_file = root / "configs" / "metadata.json"
    backup = root / PACK_BACKUP
    target = Path(out_dir) / f"lckd_brats_{version}.zip"
    partial = target.with_suffix(".zip.partial")
    if backup.is_file():  # a pack killed between its version bump and its zip: undo the bump first
        atomic_write(metadata_file, lambda file: file.write(backup.read_bytes()))
        logger.warning(f"a previous pack did not finish; {metadata_file} is restored to what it was before it")
    partial.unlink(missing_ok=True)
    if not Path(key).is_file():
        raise InputError(
            f"the signing key {key} does not exist; make one with `lckd-package keygen --out "
            "keys/<your name>` and give its .key file to --key (KEY= for make package)."
        )
    previous = metadata_file.read_bytes()
    atomic_write(backup, lambda file: file.write(previous))
    try:
        bump_version(metadata_file, version, change)
        _export_and_check(root, schema)
        write_large_files(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        members = [
            member
            for name in (*PACKAGED, *LARGE_FILES)
            for member in ([root / name] if (root / name).is_file() else sorted((root / name).rglob("*")))
            if member.is_file() and "__pycache__" not in member.parts
        ]
        manifest, signature = sign_manifest(root, members, key)
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for member in members:
                archive.write(member, member.relative_to(root).as_posix())
            archive.writestr(MANIFEST, manifest)
            archive.writestr(SIGNATURE, signature)
        os.replace(partial, target)
    except BaseException:
        atomic_write(metadata_file, lambda file: file.write(previous))  # a failed pack leaves the version as it was
        partial.unlink(missing_ok=True)
        backup.unlink(missing_ok=True)
        raise
    backup.unlink()
    logger.info(
        f"packed {target} (version {version}; {len(members)} files with their SHA-256 in {MANIFEST}, signed with {key})"
    )
    return target


MAX_UNPACKED_BYTES = 20 * 2**30
"""The most a package may expand to (weights, code, configs, docs: a BraTS-size model is under 1 GB)."""


def _unpack_and_check(
    package: Path,
    folder: Path,
    trusted_keys: Sequence[str | os.PathLike],
    schema: str | os.PathLike | None,
    max_bytes: int = MAX_UNPACKED_BYTES,
) -> str:
    try:
        with zipfile.ZipFile(package) as archive:
            members = archive.infolist()
            unsafe = [m.filename for m in members if m.filename.startswith("/") or ".." in Path(m.filename).parts]
            if unsafe:
                raise InputError(f"{package} holds paths outside its folder ({unsafe[:3]}); refusing to unpack it.")
            links = [m.filename for m in members if (m.external_attr >> 16) & 0o170000 == 0o120000]
            if links:
                raise InputError(f"{package} holds symbolic links ({links[:3]}); refusing to unpack it.")
            expanded = sum(m.file_size for m in members)
            if expanded > max_bytes:
                raise InputError(
                    f"{package} would expand to {expanded / 2**30:.1f} GB, more than the {max_bytes / 2**30:.0f} GB a "
                    "bundle package may hold; refusing to unpack it (a compressed archive of padding is an attack)."
                )
            archive.extractall(folder)
    except (zipfile.BadZipFile, FileNotFoundError) as error:
        raise InputError(f"{package} is not a readable bundle package ({error}).") from None
    signer = verify_manifest(folder, trusted_keys, str(package))
    listing = folder / "large_files.yml"
    if not listing.is_file():
        raise InputError(
            f"{package} has no large_files.yml: the weights cannot be checked; ask its sender to pack it again."
        )
    for entry in yaml.safe_load(listing.read_text()).get("large_files", []):
        path = folder / entry["path"]
        if not path.is_file():
            raise InputError(f"{package}: {entry['path']} is listed in large_files.yml but missing.")
        actual = file_sha256(path)
        if entry.get("hash_type", "sha256") != "sha256" or actual != entry["hash_val"]:
            raise InputError(
                f"{package}: {entry['path']} has SHA-256 {actual}, large_files.yml says {entry['hash_val']}: the file "
                "changed after packing (corrupted or altered). Do not use it; ask its sender for the package again."
            )
    check_metadata(folder / "configs" / "metadata.json", schema)
    return signer


def verify_package(
    package: str | os.PathLike,
    into: str | os.PathLike,
    trusted_keys: Sequence[str | os.PathLike],
    schema: str | os.PathLike | None = None,
    max_bytes: int = MAX_UNPACKED_BYTES,
) -> Path:
    """Unpack ``package`` into the new folder ``into`` and check it before use: no path leaving the folder, no link,
    at most ``max_bytes`` unpacked; a manifest signed by a key of ``trusted_keys`` (public key files or folders of
    ``*.pub``) that lists every file with its SHA-256; every ``large_files.yml`` hash; the metadata. Returns the
    bundle folder, which keeps the manifest, so its workflows re-hash their configs and code before they run
    (:func:`bundle.signing.check_unchanged`).

    Raises:
        InputError: in one line naming the file, for each of those; ``into`` exists and is not empty. Nothing of the
            package is run, and a refused package leaves nothing behind.
    """
    target = Path(into)
    if target.exists() and any(target.iterdir()):
        raise InputError(f"{target} is not empty; unpack a package into a new folder.")
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        signer = _unpack_and_check(Path(package), staging, trusted_keys, schema, max_bytes)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a refused package leaves nothing behind
        raise
    if target.exists():
        target.rmdir()
    os.replace(staging, target)
    version = read_json(target / "configs" / "metadata.json")["version"]
    files = len(json.loads((target / MANIFEST).read_text())["files"])
    logger.info(
        f"verified {package}: version {version}, signed by {signer} (trusted), {files} files and "
        f"{len(LARGE_FILES)} weight files match their SHA-256; in {target}"
    )
    return target


def main(argv: Sequence[str] | None = None) -> None:
    """``lckd-package pack --version 0.2.0 --change "..."`` / ``verify PACKAGE --into DIR``."""
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="bump the version, export, check, hash and zip the bundle")
    packing.add_argument("--bundle-root", default=".")
    packing.add_argument("--version", required=True)
    packing.add_argument("--change", required=True, help="the changelog entry of this version")
    packing.add_argument("--out", default="dist")
    packing.add_argument("--key", required=True, help="the publisher's private key (made with keygen)")
    packing.add_argument("--schema", help="model-zoo's metadata schema file (meta_schema_*.json), when at hand")
    checking = commands.add_parser("verify", help="unpack a package into a new folder and check it")
    checking.add_argument("package")
    checking.add_argument("--into", required=True)
    checking.add_argument(
        "--trusted-keys", nargs="+", required=True, help="public keys (.pub files, or folders of them) this site trusts"
    )
    checking.add_argument("--schema")
    checking.add_argument("--max-gb", type=float, default=MAX_UNPACKED_BYTES / 2**30, help="the most it may unpack to")
    making = commands.add_parser("keygen", help="make an ed25519 key pair: <out>.key (private) and <out>.pub")
    making.add_argument("--out", required=True, help="the key files' path without extension, e.g. keys/site-a")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "pack":
        packed = pack(args.bundle_root, args.version, args.change, args.out, args.key, args.schema)
        print(json.dumps({"package": str(packed)}))
    elif args.command == "verify":
        verified = verify_package(args.package, args.into, args.trusted_keys, args.schema, int(args.max_gb * 2**30))
        print(json.dumps({"bundle": str(verified)}))
    else:
        print(
            json.dumps({"fingerprint": make_key(f"{args.out}.key", f"{args.out}.pub"), "public_key": f"{args.out}.pub"})
        )


if __name__ == "__main__":
    main()
