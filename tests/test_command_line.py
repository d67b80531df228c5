"""Failures through `python -m monai.bundle run`: exit code 1, one line on stderr, and nothing lost or half-written.

Each test runs the command a user runs, as a subprocess, and checks the exit code, the message and the
files left behind.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from tests.conftest import (
    BUNDLE_ROOT,
    SUBPROCESS_ENV,
    TINY_OVERRIDES,
    TinyDatasetTestCase,
    fresh_metadata,
    locked_by_another_process,
    tiny_checkpoint,
)

TINY_ARGS = [item for key, value in TINY_OVERRIDES.items() for item in (f"--{key}", json.dumps(value))]


def bundle_run(configs: list[str], *args: str, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file <configs> <args>`` from the bundle root, with two threads."""

    def limit_file_size() -> None:  # a full disk, as far as this process can tell
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = {k: v for k, v in SUBPROCESS_ENV.items() if k != "LCKD_TRACEBACK"}
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr([f"configs/{c}" for c in configs]), *args],
        cwd=BUNDLE_ROOT, capture_output=True, text=True, env=env, timeout=600,
        preexec_fn=limit_file_size if file_size_limit else None,
    )  # fmt: skip


class CommandLineTestCase(TinyDatasetTestCase):
    def assert_one_line_error(self, result: subprocess.CompletedProcess, *fragments: str) -> str:
        """Exit code 1 and an ``error:`` message holding ``fragments``, with no traceback; returns the message."""
        self.assertEqual(result.returncode, 1, result.stdout[-2000:] + result.stderr[-2000:])
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        message = result.stderr[result.stderr.index("error: ") :]
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class TestTraining(CommandLineTestCase):
    def _train(self, work: Path, *args: str, dataset: Path | None = None) -> subprocess.CompletedProcess:
        return bundle_run(
            ["train.json"], "--dataset_dir", str(dataset or self.dataset), "--ckpt_dir", str(work / "models"),
            "--output_dir", str(work / "eval"), "--metadata_file", str(fresh_metadata(work)),
            "--datalist_file", str(work / "datalist.json"), *TINY_ARGS, *args,
        )  # fmt: skip

    def test_a_misspelt_key_and_wrong_values_are_refused_before_anything_runs(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            typo = self._train(work, "--max_epoch", "2")
            self.assert_one_line_error(typo, "unknown setting --max_epoch (did you mean --max_epochs?)")
            values = self._train(
                work, "--max_epochs", "2.5", "--overlap", "1.0", "--sw_batch_size", "0", "--device", "cuda:7"
            )
            message = self.assert_one_line_error(values, "4 problem(s) in the settings:")
            for expected in ("--max_epochs must be a whole number >= 1; got 2.5", "--overlap must be a number >= 0 and < 1",
                             "--sw_batch_size must be a whole number >= 1; got 0", "--device must be a device this machine has"):  # fmt: skip
                self.assertIn(expected, message)
            self.assertFalse((work / "models").exists() and any((work / "models").glob("*.pt")))

    def test_a_second_training_into_a_busy_ckpt_dir_is_refused_and_the_first_keeps_its_model(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "models").mkdir()
            (work / "models" / "model.pt").write_bytes(b"the first run's best model")
            with locked_by_another_process(work / "models") as holder:
                second = self._train(work, "--max_epochs", "1", "--elect_epoch", "1")
            self.assert_one_line_error(second, f"another run (pid {holder.pid} on ", f"is writing to {work / 'models'}")
            self.assertEqual((work / "models" / "model.pt").read_bytes(), b"the first run's best model")
            self.assertEqual(sorted(p.name for p in (work / "models").iterdir()), [".lock", "model.pt"])

    def test_a_non_finite_loss_stops_training_without_a_checkpoint(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            result = self._train(work, "--max_epochs", "2", "--elect_epoch", "2", "--learning_rate", "1e30")
            self.assert_one_line_error(result, "the loss is not finite at epoch 1, iteration ", "cases SYNTH_")
            self.assertEqual(list((work / "models").glob("*.pt")), [])

    def test_a_case_in_two_splits_is_found_before_training(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            splits = {"training": [{"case": "SYNTH_0000", "flair": "SYNTH_0000/SYNTH_0000_flair.nii.gz",
                                    "label": "SYNTH_0000/SYNTH_0000_seg.nii.gz"}]}  # fmt: skip
            splits["validation"] = splits["training"]
            (work / "datalist.json").write_text(json.dumps(splits))
            result = self._train(work, "--max_epochs", "1", "--elect_epoch", "1")
            self.assert_one_line_error(result, "puts cases in two splits: SYNTH_0000 (training and validation)")
            self.assertEqual(list((work / "models").glob("*.pt")), [])


class TestInference(CommandLineTestCase):
    def _infer(self, work: Path, dataset: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
        network = [
            a for key in ("filters", "kernel_size", "strides") for a in (f"--{key}", json.dumps(TINY_OVERRIDES[key]))
        ]
        return bundle_run(
            ["inference.json"], "--dataset_dir", str(dataset), "--ckpt_path", str(work / "model.pt"),
            "--output_dir", str(work / "out"), "--num_workers", "0", *network, *args, **kwargs,
        )  # fmt: skip

    def _one_case(self, work: Path) -> Path:
        shutil.copytree(self.dataset / "SYNTH_0002", work / "data" / "SYNTH_0002")
        return work / "data"

    def test_a_full_disk_is_an_error_and_leaves_no_file(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            tiny_checkpoint(work / "model.pt")
            result = self._infer(work, self._one_case(work), file_size_limit=200)
            self.assert_one_line_error(result, "could not write the segmentation of ", "File too large")
            self.assertEqual(list((work / "out").iterdir()), [])  # no empty segmentation, no sidecar claiming one

    def test_a_checkpoint_carrying_code_is_refused_unread(self):
        class Payload:
            def __reduce__(self):
                return (os.mkdir, (str(marker),))

        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            marker = work / "payload_ran"
            torch.save({"model": Payload()}, work / "model.pt")
            result = self._infer(work, self._one_case(work))
            self.assert_one_line_error(
                result, "holds Python objects other than weights (posix.mkdir) and was refused unread"
            )
            self.assertNotIn("weights_only=False", result.stdout + result.stderr)
            self.assertFalse(marker.exists())

    def test_a_broken_link_at_a_sequence_name_is_an_error_not_a_missing_sequence(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            tiny_checkpoint(work / "model.pt")
            dataset = self._one_case(work)
            (dataset / "SYNTH_0002" / "SYNTH_0002_t1.nii.gz").unlink()
            (dataset / "SYNTH_0002" / "SYNTH_0002_t1.nii.gz").symlink_to("/mnt/unmounted/t1.nii.gz")
            result = self._infer(work, dataset)
            self.assert_one_line_error(
                result, "SYNTH_0002_t1.nii.gz is a dangling symlink (to /mnt/unmounted/t1.nii.gz)"
            )


if __name__ == "__main__":
    unittest.main()
