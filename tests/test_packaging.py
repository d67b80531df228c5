"""Sharing the bundle (bundle/packaging.py): pack, unpack elsewhere, verify, run; a flipped byte is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from bundle.errors import InputError
from bundle.packaging import bump_version, file_sha256
from tests.helpers import (
    BUNDLE_ROOT,
    NETWORK_KEYS,
    SUBPROCESS_ENV,
    TINY_NETWORK,
    USER_ENV,
    TinyDatasetTestCase,
    fresh_metadata,
    monai_bundle,
    run_command,
    run_inference,
    tiny_checkpoint,
)

PACK = [str(Path(sys.executable).parent / "lckd-package")]


def _command(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_command([*PACK, *arguments], cwd=cwd, timeout=300, env=SUBPROCESS_ENV)


def _pack(change: str, out: Path, keys: Path) -> list[str]:
    """``pack``'s arguments: version 9.1.0 with ``change``, into ``out``, signed with ``keys``' publisher key."""
    return ["pack", "--version", "9.1.0", "--change", change, "--out", str(out), "--key", str(keys / "publisher.key")]


def _infer(bundle_root: Path, dataset: Path, output: Path) -> np.ndarray:
    """inference.json of ``bundle_root``, run there with its own code (the package's ``bundle``) first on the path."""
    settings = {k: v for k, v in TINY_NETWORK.items() if k not in NETWORK_KEYS}
    settings.update({"dataset_dir": str(dataset), "output_dir": str(output), "bundle_root": str(bundle_root)})
    run_inference(settings, output.parent, bundle_root)
    return np.asarray(nib.load(output / "SYNTH_0001_flair_seg.nii.gz").dataobj)


class TestBumpVersion(unittest.TestCase):
    def test_version_must_rise_and_the_change_be_said(self):
        with tempfile.TemporaryDirectory() as tmp:
            metadata = fresh_metadata(Path(tmp))
            current = json.loads(metadata.read_text())["version"]
            with self.assertRaisesRegex(InputError, f"version {current} is not above the bundle's {current}"):
                bump_version(metadata, current, "again")
            with self.assertRaisesRegex(InputError, "the changelog entry is empty"):
                bump_version(metadata, "9.0.0", " ")
            bump_version(metadata, "9.0.0", "new weights")
            written = json.loads(metadata.read_text())
            self.assertEqual(written["version"], "9.0.0")
            self.assertEqual(next(iter(written["changelog"].items())), ("9.0.0", "new weights"))
            self.assertIn(current, written["changelog"])


def _keys(folder: Path) -> Path:
    """``folder/keys``: the publisher's pair, and the receiving site's trust list (a folder holding its public key)."""
    keys = folder / "keys"
    made = _command(["keygen", "--out", str(keys / "publisher")], folder)
    assert made.returncode == 0, made.stderr
    (keys / "trusted").mkdir()
    shutil.copy(keys / "publisher.pub", keys / "trusted" / "publisher.pub")
    return keys


def _sender(folder: Path) -> Path:
    """A copy of the bundle with tiny weights, as a site that packs it has it."""
    for name in ("configs", "bundle", "jobs", "docs", "scripts"):
        shutil.copytree(BUNDLE_ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("LICENSE", "README.md", "pyproject.toml"):
        shutil.copy(BUNDLE_ROOT / name, folder / name)
    fresh_metadata(folder / "configs")
    (folder / "models").mkdir()
    tiny_checkpoint(folder / "models" / "model.pt")
    return folder


@pytest.mark.slow
class TestPackKilled(unittest.TestCase):
    def test_a_pack_killed_after_its_version_bump_is_undone_by_the_next(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            sender = _sender(tmp / "sender")
            keys = _keys(tmp)
            before = json.loads((sender / "configs" / "metadata.json").read_text())
            killed = run_command(
                [
                    sys.executable,
                    "-c",
                    "import os, signal, sys; import bundle.packaging as p; "
                    "p._export_and_check = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
                    "p.main(sys.argv[1:])",
                    *_pack("x", tmp / "dist", keys),
                ],
                cwd=sender,
                timeout=300,
                env={**SUBPROCESS_ENV, "PYTHONPATH": str(sender)},
            )
            self.assertEqual(killed.returncode, -9, killed.stderr[-2000:])
            self.assertEqual(json.loads((sender / "configs" / "metadata.json").read_text())["version"], "9.1.0")
            again = _command(_pack("tiny weights", tmp / "dist", keys), sender)
            self.assertEqual(again.returncode, 0, again.stderr[-2000:])
            self.assertIn("a previous pack did not finish", again.stderr)
            after = json.loads((sender / "configs" / "metadata.json").read_text())
            self.assertEqual(after["version"], "9.1.0")
            self.assertEqual(after["changelog"]["9.1.0"], "tiny weights")
            self.assertEqual(set(after["changelog"]) - set(before["changelog"]), {"9.1.0"})
            self.assertEqual(sorted(p.name for p in (tmp / "dist").iterdir()), ["lckd_brats_9.1.0.zip"])
            self.assertFalse((sender / ".metadata.before-pack.json").exists())


@pytest.mark.slow
class TestPackageRoundTrip(TinyDatasetTestCase):
    def test_pack_unpack_verify_run_and_refuse_a_flipped_byte(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            sender = _sender(tmp / "sender")

            keys = _keys(tmp)
            packed = _command(_pack("tiny test weights", tmp / "dist", keys), sender)
            self.assertEqual(packed.returncode, 0, packed.stderr[-2000:])
            package = Path(json.loads(packed.stdout.strip().splitlines()[-1])["package"])
            self.assertEqual(package.name, "lckd_brats_9.1.0.zip")
            listing = yaml.safe_load((sender / "large_files.yml").read_text())["large_files"]
            self.assertEqual([e["path"] for e in listing], ["models/model.pt", "models/model.ts"])
            self.assertEqual(listing[0]["hash_val"], file_sha256(sender / "models" / "model.pt"))
            with zipfile.ZipFile(package) as archive:
                self.assertIn("models/model.ts", archive.namelist())
                self.assertIn("jobs/lckd_fedavg/app/config/config_fed_server.json", archive.namelist())
                self.assertFalse([n for n in archive.namelist() if "__pycache__" in n])

            received = _command(
                ["verify", str(package), "--into", str(tmp / "receiver"), "--trusted-keys", str(keys / "trusted")], tmp
            )
            self.assertEqual(received.returncode, 0, received.stderr[-2000:])
            self.assertRegex(
                received.stderr, r"version 9.1.0, signed by SHA256:\S+ \(trusted\), \d+ files and 2 weight"
            )
            np.testing.assert_array_equal(
                _infer(tmp / "receiver", self.dataset, tmp / "out_receiver" / "seg"),
                _infer(sender, self.dataset, tmp / "out_sender" / "seg"),
            )

            corrupted = tmp / "corrupted.zip"
            with zipfile.ZipFile(package) as source, zipfile.ZipFile(corrupted, "w") as target:
                for item in source.infolist():
                    data = bytearray(source.read(item))
                    if item.filename == "models/model.pt":
                        data[len(data) // 2] ^= 0x01
                    target.writestr(item, bytes(data))
            refused = _command(
                ["verify", str(corrupted), "--into", str(tmp / "refused"), "--trusted-keys", str(keys / "trusted")], tmp
            )
            self.assertEqual(refused.returncode, 1)
            self.assertRegex(
                refused.stderr, r"error: .*corrupted.zip: models/model.pt has SHA-256 [0-9a-f]{64}, MANIFEST.json says"
            )
            self.assertFalse((tmp / "refused").exists())
            self.assertFalse((tmp / ".refused.partial").exists())


PAYLOAD = "$__import__('pathlib').Path({marker!r}).touch() or torch.device('cpu')"


def _rezip(package: Path, target: Path, change) -> Path:
    """A copy of ``package`` whose members pass through ``change(name, data) -> data`` (``None`` drops one)."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            data = change(item.filename, source.read(item))
            if data is not None:
                out.writestr(item.filename, data)
    return target


@pytest.mark.slow
class TestTamperedPackages(unittest.TestCase):
    """Issue 26, item 1: each tampering refused in one line naming the file; the payload never runs."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = cls.root = Path(cls.tmp.name)
        cls.keys = _keys(root)
        sender = _sender(root / "sender")
        packed = _command(_pack("x", root / "dist", cls.keys), sender)
        assert packed.returncode == 0, packed.stderr[-2000:]
        cls.package = root / "dist" / "lckd_brats_9.1.0.zip"
        cls.marker = root / "payload_ran"

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _verify(self, package: Path, name: str, *extra: str, trusted: Path | None = None):
        return _command(
            [
                "verify",
                str(package),
                "--into",
                str(self.root / name),
                "--trusted-keys",
                str(trusted or self.keys / "trusted"),
                *extra,
            ],
            self.root,
        )

    def assert_refused(self, result, name: str, *fragments: str) -> None:
        self.assertEqual(result.returncode, 1, result.stdout[-1500:] + result.stderr[-1500:])
        self.assertNotIn("Traceback", result.stderr)
        for fragment in fragments:
            self.assertIn(fragment, result.stderr)
        self.assertFalse((self.root / name).exists())
        self.assertFalse((self.root / f".{name}.partial").exists())
        self.assertFalse(self.marker.exists())

    def _with_payload(self, name: str, data: bytes) -> bytes:
        if name != "configs/inference.json":
            return data
        config = json.loads(data)
        config["device"] = PAYLOAD.format(marker=str(self.marker))
        return json.dumps(config).encode()

    def test_a_config_carrying_code_is_refused(self):
        tampered = _rezip(self.package, self.root / "config.zip", self._with_payload)
        self.assert_refused(self._verify(tampered, "config"), "config", "configs/inference.json has SHA-256")

    def test_changed_code_is_refused(self):
        tampered = _rezip(
            self.package,
            self.root / "code.zip",
            lambda name, data: data + b"\nimport os\n" if name == "bundle/__init__.py" else data,
        )
        self.assert_refused(self._verify(tampered, "code"), "code", "bundle/__init__.py has SHA-256")

    def test_zeroed_weights_with_large_files_rehashed_are_refused(self):
        zeroed = bytes(len(zipfile.ZipFile(self.package).read("models/model.pt")))
        digest = hashlib.sha256(zeroed).hexdigest()

        def change(name: str, data: bytes) -> bytes:
            if name == "models/model.pt":
                return zeroed
            if name == "large_files.yml":
                listing = yaml.safe_load(data)
                listing["large_files"][0]["hash_val"] = digest
                return yaml.safe_dump(listing).encode()
            return data

        tampered = _rezip(self.package, self.root / "weights.zip", change)
        self.assert_refused(self._verify(tampered, "weights"), "weights", "has SHA-256", "MANIFEST.json says")

    def test_an_unlisted_file_is_refused(self):
        with zipfile.ZipFile(_rezip(self.package, self.root / "extra.zip", lambda n, d: d), "a") as archive:
            archive.writestr("bundle/sitecustomize.py", "print('hello')")
        self.assert_refused(
            self._verify(self.root / "extra.zip", "extra"), "extra", "bundle/sitecustomize.py is not in MANIFEST.json"
        )

    def test_an_unsigned_package_and_an_untrusted_key_are_refused(self):
        unsigned = _rezip(self.package, self.root / "unsigned.zip", lambda n, d: None if n == "MANIFEST.sig" else d)
        self.assert_refused(self._verify(unsigned, "unsigned"), "unsigned", "is not a signed package")
        other = self.root / "other"
        _command(["keygen", "--out", str(other / "someone")], self.root)
        self.assert_refused(
            self._verify(self.package, "untrusted", trusted=other / "someone.pub"), "untrusted", "not in the trust list"
        )

    def test_an_archive_that_expands_past_the_limit_is_refused_unpacked(self):
        with zipfile.ZipFile(
            _rezip(self.package, self.root / "big.zip", lambda n, d: d), "a", zipfile.ZIP_DEFLATED
        ) as a:
            a.writestr("docs/padding.bin", bytes(64 * 2**20))  # 64 MB of zeros, a few hundred kB compressed
        self.assertLess((self.root / "big.zip").stat().st_size, 2 * self.package.stat().st_size + 2**20)
        self.assert_refused(
            self._verify(self.root / "big.zip", "big", "--max-gb", "0.05"),
            "big",
            "would expand to",
            "refusing to unpack",
        )

    def test_a_verified_folder_refuses_to_run_configs_changed_after_verification(self):
        verified = self._verify(self.package, "verified")
        self.assertEqual(verified.returncode, 0, verified.stderr[-2000:])
        config = self.root / "verified" / "configs" / "inference.json"
        config.write_text(self._with_payload("configs/inference.json", config.read_bytes()).decode())
        run = monai_bundle(
            "run",
            "--config_file",
            "configs/inference.json",
            cwd=self.root / "verified",
            timeout=300,
            env={**USER_ENV, "PYTHONPATH": str(self.root / "verified")},
        )
        self.assertEqual(run.returncode, 1, run.stdout[-1500:] + run.stderr[-1500:])
        self.assertIn("configs/inference.json has SHA-256", run.stderr)
        self.assertNotIn("Traceback", run.stderr)
        self.assertFalse(self.marker.exists())


if __name__ == "__main__":
    unittest.main()
