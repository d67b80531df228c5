"""File I/O: what counts as a missing file, the run-folder lock, atomic saves and report sets that change together."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np

from bundle.errors import InputError
from bundle.io import atomic_save_nifti, lock_folder, publish_files, unreadable_reason
from bundle.reports.tables import summarize_combinations, write_combination_reports
from tests.helpers import BUNDLE_ROOT, SUBPROCESS_ENV, locked_by_another_process


class TestUnreadableReason(unittest.TestCase):
    def test_only_an_absent_name_is_absent(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "file").write_bytes(b"x")
            (root / "folder").mkdir()
            (root / "dangling").symlink_to(root / "gone")
            (root / "loop").symlink_to(root / "loop")
            (root / "link").symlink_to(root / "file")
            self.assertIsNone(unreadable_reason(root / "file"))
            self.assertIsNone(unreadable_reason(root / "link"))
            self.assertEqual(unreadable_reason(root / "nothing"), "absent")
            self.assertEqual(unreadable_reason(root / "folder"), "a folder, not a file")
            self.assertEqual(unreadable_reason(root / "dangling"), f"a dangling symlink (to {root / 'gone'})")
            self.assertEqual(unreadable_reason(root / "loop"), "a symlink loop")
            self.assertEqual(unreadable_reason("/dev/null"), "not a regular file")


class TestLockFolder(unittest.TestCase):
    def test_a_second_process_is_refused_until_the_first_ends(self):
        with tempfile.TemporaryDirectory() as tmp:
            with locked_by_another_process(Path(tmp)) as holder:
                second = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        f"import bundle.errors, bundle.io; bundle.errors.install_excepthook(); bundle.io.lock_folder({tmp!r})",
                    ],
                    cwd=BUNDLE_ROOT,
                    capture_output=True,
                    text=True,
                    env=SUBPROCESS_ENV,
                )
            self.assertEqual(second.returncode, 1)
            self.assertIn(f"error: another run (pid {holder.pid} on ", second.stderr)
            self.assertNotIn("Traceback", second.stderr)
            # the operating system dropped the lock with the process: no stale lock
            self.assertEqual(lock_folder(tmp), Path(tmp) / ".lock")


class TestAtomicSave(unittest.TestCase):
    def test_a_failed_save_leaves_nothing_under_the_name_and_keeps_the_old_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "case_seg.nii.gz"
            atomic_save_nifti(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), path)
            with mock.patch("nibabel.save", side_effect=OSError(28, "No space left on device")):
                with self.assertRaises(OSError):
                    atomic_save_nifti(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), path)
            self.assertEqual([p.name for p in Path(tmp).iterdir()], ["case_seg.nii.gz"])
            self.assertEqual(np.asarray(nib.load(path).dataobj).sum(), 64)


class TestPublishFiles(unittest.TestCase):
    def test_a_failure_midway_keeps_the_whole_previous_set(self):
        with tempfile.TemporaryDirectory() as tmp:
            old = publish_files({"a.csv": b"old a", "b.md": b"old b", "c.png": b"old c"}, tmp)
            real_write = __import__("bundle.io", fromlist=["atomic_write"]).atomic_write
            calls = []

            def killed_at_the_third_file(path, write):
                calls.append(path)
                if len(calls) == 3:
                    raise KeyboardInterrupt  # as a kill between the files would
                return real_write(path, write)

            with mock.patch("bundle.io.atomic_write", killed_at_the_third_file):
                with self.assertRaises(KeyboardInterrupt):
                    publish_files({"a.csv": b"new a", "b.md": b"new b", "c.png": b"new c"}, tmp)
            self.assertEqual(
                [old[name].read_bytes() for name in ("a.csv", "b.md", "c.png")], [b"old a", b"old b", b"old c"]
            )
            self.assertEqual(len(list((Path(tmp) / ".report-versions").iterdir())), 1)  # the half-written set is gone
            new = publish_files({"a.csv": b"new a", "b.md": b"new b", "c.png": b"new c"}, tmp)
            self.assertEqual(new["b.md"].read_bytes(), b"new b")
            self.assertEqual(len(list((Path(tmp) / ".report-versions").iterdir())), 1)  # the old set is deleted

    def test_a_report_that_cannot_be_written_is_saved_elsewhere_and_named(self):
        rows = [{"case": "c1", "combination": "flair", "n_modalities": 1, "split": "test"}]
        rows[0].update({f"dice_{region}": 0.5 for region in ("ET", "TC", "WT")})
        summary = summarize_combinations(rows, ["flair"])
        with tempfile.TemporaryDirectory() as tmp:
            with mock.patch(
                "bundle.reports.tables.publish_files", side_effect=PermissionError(13, "Permission denied")
            ):
                with self.assertRaisesRegex(
                    InputError,
                    r"could not write the report into .*report \(Permission denied\); the computed report was saved in (\S+) instead",
                ) as caught:
                    write_combination_reports(rows, summary, tmp, "test")
            fallback = Path(str(caught.exception).split("saved in ")[1].split(" instead")[0])
            self.assertEqual(
                sorted(p.name for p in fallback.iterdir()),
                ["combinations.csv", "combinations.png", "summary.csv", "summary.md"],
            )
            self.assertIn("c1,flair", (fallback / "combinations.csv").read_text())
            for path in fallback.iterdir():
                path.unlink()
            os.rmdir(fallback)
