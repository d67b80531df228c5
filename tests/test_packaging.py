"""Sharing the bundle (bundle/packaging.py): pack, unpack elsewhere, verify, run; a flipped byte is refused."""

from __future__ import annotations

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
import yaml

from bundle.errors import InputError
from bundle.packaging import bump_version, file_sha256
from tests.conftest import (
    BUNDLE_ROOT,
    NETWORK_KEYS,
    SUBPROCESS_ENV,
    TINY_NETWORK,
    TinyDatasetTestCase,
    fresh_metadata,
    run_inference,
    tiny_checkpoint,
)

PACK = [sys.executable, str(BUNDLE_ROOT / "scripts" / "package_bundle.py")]


def _command(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*PACK, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)


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


class TestPackKilled(unittest.TestCase):
    def test_a_pack_killed_after_its_version_bump_is_undone_by_the_next(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            sender = _sender(tmp / "sender")
            before = json.loads((sender / "configs" / "metadata.json").read_text())
            killed = subprocess.run(
                [sys.executable, "-c",
                 "import os, signal, sys; import bundle.packaging as p; "
                 "p._export_and_check = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
                 "p.main(sys.argv[1:])", "pack", "--version", "9.1.0", "--change", "x", "--out", str(tmp / "dist")],
                cwd=sender, capture_output=True, text=True, timeout=300, env={**SUBPROCESS_ENV, "PYTHONPATH": str(sender)},
            )  # fmt: skip
            self.assertEqual(killed.returncode, -9, killed.stderr[-2000:])
            self.assertEqual(json.loads((sender / "configs" / "metadata.json").read_text())["version"], "9.1.0")
            again = _command(
                ["pack", "--version", "9.1.0", "--change", "tiny weights", "--out", str(tmp / "dist")], sender
            )
            self.assertEqual(again.returncode, 0, again.stderr[-2000:])
            self.assertIn("a previous pack did not finish", again.stderr)
            after = json.loads((sender / "configs" / "metadata.json").read_text())
            self.assertEqual(after["version"], "9.1.0")
            self.assertEqual(after["changelog"]["9.1.0"], "tiny weights")
            self.assertEqual(set(after["changelog"]) - set(before["changelog"]), {"9.1.0"})
            self.assertEqual(sorted(p.name for p in (tmp / "dist").iterdir()), ["lckd_brats_9.1.0.zip"])
            self.assertFalse((sender / ".metadata.before-pack.json").exists())


class TestPackageRoundTrip(TinyDatasetTestCase):
    def test_pack_unpack_verify_run_and_refuse_a_flipped_byte(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            sender = _sender(tmp / "sender")

            packed = _command(
                ["pack", "--version", "9.1.0", "--change", "tiny test weights", "--out", str(tmp / "dist")], sender
            )
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

            received = _command(["verify", str(package), "--into", str(tmp / "receiver")], tmp)
            self.assertEqual(received.returncode, 0, received.stderr[-2000:])
            self.assertIn("version 9.1.0, 2 weight files match their SHA-256", received.stderr)
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
            refused = _command(["verify", str(corrupted), "--into", str(tmp / "refused")], tmp)
            self.assertEqual(refused.returncode, 1)
            self.assertRegex(
                refused.stderr,
                r"error: .*corrupted.zip: models/model.pt has SHA-256 [0-9a-f]{64}, large_files.yml says",
            )
            self.assertFalse((tmp / "refused").exists())
            self.assertFalse((tmp / ".refused.partial").exists())


if __name__ == "__main__":
    unittest.main()
