"""Signed manifests for shared bundles: every file's SHA-256, signed with the publisher's ed25519 key.

A package's ``MANIFEST.json`` lists every file it holds with its SHA-256 and names the publisher's key by its
fingerprint; ``MANIFEST.sig`` is the publisher's ed25519 signature of that manifest. A receiving site trusts a set
of public keys (its trust list); a package verifies only when a trusted key made its signature and every file
matches its listed hash, with no file unlisted. The unpacked folder keeps the manifest, the signature and the
public key that verified them (``TRUSTED_KEY``), and :func:`check_unchanged` re-hashes its configs and code before a
workflow parses them. Keys are made offline with ``lckd-package keygen`` (``cryptography``'s
ed25519, PEM files).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bundle.errors import InputError

__all__ = [
    "MANIFEST",
    "SIGNATURE",
    "TRUSTED_KEY",
    "RECHECKED",
    "make_key",
    "fingerprint",
    "sign_manifest",
    "verify_manifest",
    "check_unchanged",
]

MANIFEST = "MANIFEST.json"
SIGNATURE = "MANIFEST.sig"
TRUSTED_KEY = "MANIFEST.key.pub"
"""The public key that verified a received package, kept beside its manifest."""
SIGNING_FILES = (MANIFEST, SIGNATURE, TRUSTED_KEY)
RECHECKED = ("configs", "bundle", "jobs")
"""What a workflow started from a verified folder re-hashes before it parses anything: configs and code (but
``configs/metadata.json``, which training and election update: :data:`UPDATED`)."""
UPDATED = ("configs/metadata.json",)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_key(private_path: str | os.PathLike, public_path: str | os.PathLike) -> str:
    """Write a new ed25519 key pair as PEM files (the private one readable by its owner only); returns the fingerprint.

    Raises:
        InputError: when either file exists (a key is never overwritten).
    """
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise InputError(f"{path} exists; a key is never overwritten. Choose another name or move it away.")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(private)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return fingerprint(key.public_key())


def fingerprint(key: Ed25519PublicKey) -> str:
    """``SHA256:<base64>`` of the raw public key, as ``ssh-keygen -l`` shows keys."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def _private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise InputError(
            f"{path} is not a readable private key ({error}); make one with `lckd-package keygen`."
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} is not an ed25519 key; make one with `lckd-package keygen`.")
    return key


def _public_keys(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, Ed25519PublicKey]]:
    """The ed25519 public keys in ``paths`` (files, or folders of ``*.pub`` files)."""
    keys = []
    for entry in paths:
        entry = Path(entry)
        for path in sorted(entry.glob("*.pub")) if entry.is_dir() else [entry]:
            try:
                key = serialization.load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as error:
                raise InputError(
                    f"{path} is not a readable public key ({error}); ask its owner for the .pub file."
                ) from None
            if not isinstance(key, Ed25519PublicKey):
                raise InputError(f"{path} is not an ed25519 public key.")
            keys.append((path, key))
    return keys


def sign_manifest(
    root: str | os.PathLike, files: Sequence[str | os.PathLike], private_key: str | os.PathLike
) -> tuple[bytes, bytes]:
    """The manifest of ``files`` (paths under ``root``; each with its SHA-256, the signer's fingerprint) and its
    signature with ``private_key``, as the bytes of ``MANIFEST.json`` and ``MANIFEST.sig``."""
    root = Path(root)
    key = _private_key(private_key)
    listed = {Path(f).resolve().relative_to(root.resolve()).as_posix() for f in files}
    manifest = {
        "signer": fingerprint(key.public_key()),
        "files": {name: _sha256(root / name) for name in sorted(listed - set(SIGNING_FILES))},
    }
    content = json.dumps(manifest, indent=1, sort_keys=True).encode()
    return content, base64.b64encode(key.sign(content)) + b"\n"


def _manifest(folder: Path, name: str) -> tuple[bytes, dict[str, Any]]:
    path = folder / MANIFEST
    if not path.is_file() or not (folder / SIGNATURE).is_file():
        raise InputError(
            f"{name} has no {MANIFEST} and {SIGNATURE}: it is not a signed package. Ask its sender to pack it with "
            "their key (lckd-package pack --key ...)."
        )
    content = path.read_bytes()
    try:
        manifest = json.loads(content)
        if not isinstance(manifest["files"], dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{name}: {MANIFEST} is not a manifest of this bundle; do not use the package.") from None
    return content, manifest


def verify_manifest(folder: str | os.PathLike, trusted_keys: Sequence[str | os.PathLike], name: str = "") -> str:
    """Check an unpacked package: a trusted key signed its manifest, and every file is listed with its hash.

    Args:
        folder: the unpacked package.
        trusted_keys: public key files, or folders of ``*.pub`` files: the receiving site's trust list.
        name: how messages name the package (default the folder).

    Returns:
        The fingerprint of the key that signed it; its public key is kept as ``TRUSTED_KEY`` in ``folder``.

    Raises:
        InputError: in one line naming the file: no or an invalid signature, a signer not in the trust list, a file
            whose hash differs, a listed file missing, or a file the manifest does not list.
    """
    folder = Path(folder)
    name = name or str(folder)
    content, manifest = _manifest(folder, name)
    keys = _public_keys(trusted_keys)
    if not keys:
        raise InputError(
            f"the trust list {list(map(str, trusted_keys))} holds no public key; add the sender's .pub file."
        )
    signature = _signature(folder)
    if signature is None:
        raise InputError(f"{name}: {SIGNATURE} is not a signature; do not use the package.")
    signer = next((key for _, key in keys if _verifies(key, signature, content)), None)
    if signer is None:
        if manifest.get("signer") in {fingerprint(key) for _, key in keys}:
            raise InputError(f"{name}: {SIGNATURE} does not match {MANIFEST}: the manifest was changed after signing.")
        raise InputError(
            f"{name} is signed by {manifest.get('signer', 'an unnamed key')}, which is not in the trust list "
            f"({', '.join(str(path) for path, _ in keys)}); add the sender's public key only if you trust them."
        )
    present = {
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file() or path.is_symlink()
    } - set(SIGNING_FILES)
    unlisted = sorted(present - set(manifest["files"]))
    if unlisted:
        raise InputError(f"{name}: {unlisted[0]} is not in {MANIFEST} (added after signing); do not use the package.")
    _check_hashes(folder, manifest["files"], name)
    (folder / TRUSTED_KEY).write_bytes(
        signer.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return fingerprint(signer)


def _signature(folder: Path) -> bytes | None:
    """The raw signature in ``folder``'s ``MANIFEST.sig`` (base64, one line), or None when it is not base64."""
    try:
        return base64.b64decode((folder / SIGNATURE).read_bytes().strip(), validate=True)
    except ValueError:
        return None


def _verifies(key: Ed25519PublicKey, signature: bytes, content: bytes) -> bool:
    try:
        key.verify(signature, content)
        return True
    except InvalidSignature:
        return False


def _check_hashes(folder: Path, listed: Mapping[str, str], name: str) -> None:
    for relative, expected in listed.items():
        path = folder / relative
        if not path.is_file():
            raise InputError(f"{name}: {relative} is listed in {MANIFEST} but missing; do not use the package.")
        actual = _sha256(path)
        if actual != expected:
            raise InputError(
                f"{name}: {relative} has SHA-256 {actual}, {MANIFEST} says {expected}: it changed after signing. Do "
                "not use it; ask its sender for the package again."
            )


def check_unchanged(folder: str | os.PathLike) -> None:
    """In a folder a package was verified into: the manifest still carries its signature, and the configs and code
    (:data:`RECHECKED`) are the ones it lists, with none added. Nothing happens in a folder with no manifest (a
    checkout, a bundle of one's own).

    Raises:
        InputError: naming the first changed, missing or added file.
    """
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return
    name = f"{folder} (a verified package)"
    content, manifest = _manifest(folder, name)
    keys = _public_keys([folder / TRUSTED_KEY]) if (folder / TRUSTED_KEY).is_file() else []
    signature = _signature(folder)
    if signature is None or not any(_verifies(key, signature, content) for _, key in keys):
        raise InputError(f"{name}: {MANIFEST} no longer carries its verified signature; verify the package again.")
    checked = {
        path.relative_to(folder).as_posix()
        for part in RECHECKED
        for path in (folder / part).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    } - set(UPDATED)
    added = sorted(checked - set(manifest["files"]))
    if added:
        raise InputError(f"{name}: {added[0]} was added after verification; remove it or verify the package again.")
    listed = {k: v for k, v in manifest["files"].items() if k.split("/")[0] in RECHECKED and k not in UPDATED}
    _check_hashes(folder, listed, name)
