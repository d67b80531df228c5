"""Failures through `python -m monai.bundle run`: exit code 1, one line on stderr, and nothing lost or half-written.

Each test runs the command a user runs, as a subprocess, and checks the exit code, the message and the
files left behind.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import subprocess
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
import torch

from bundle.networks import read_record
from tests.helpers import (
    TINY_OVERRIDES,
    TinyDatasetTestCase,
    fresh_metadata,
    locked_by_another_process,
    monai_bundle,
    tiny_checkpoint,
)

pytestmark = pytest.mark.slow  # whole workflows or subprocesses: `make test-fast` leaves them out

TINY_ARGS = [item for key, value in TINY_OVERRIDES.items() for item in (f"--{key}", json.dumps(value))]


def bundle_run(configs: list[str], *args: str, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file <configs> <args>`` from the bundle root, with two threads."""

    def limit_file_size() -> None:  # a full disk, as far as this process can tell
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return monai_bundle(
        "run",
        "--config_file",
        repr([f"configs/{c}" for c in configs]),
        *args,
        preexec_fn=limit_file_size if file_size_limit else None,
    )


def code_carrying_checkpoint(path: Path) -> Path:
    """Save at ``path`` a checkpoint whose unpickling would create a folder; returns that folder's path (the marker)."""
    marker = path.parent / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"model": Payload()}, path)
    return marker


class CommandLineTestCase(TinyDatasetTestCase):
    def assert_one_line_error(self, result: subprocess.CompletedProcess, *fragments: str) -> str:
        """Exit code 1 and an ``error:`` message holding ``fragments``, with no traceback; returns the message."""
        self.assertEqual(result.returncode, 1, result.stdout[-2000:] + result.stderr[-2000:])
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        message = result.stderr[result.stderr.index("error: ") :]
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def _train(self, work: Path, *args: str, dataset: Path | None = None) -> subprocess.CompletedProcess:
        return bundle_run(
            ["train.json"],
            "--dataset_dir",
            str(dataset or self.dataset),
            "--ckpt_dir",
            str(work / "models"),
            "--output_dir",
            str(work / "eval"),
            "--metadata_file",
            str(fresh_metadata(work)),
            "--datalist_file",
            str(work / "datalist.json"),
            *TINY_ARGS,
            *args,
        )

    def _infer(
        self, work: Path, dataset: Path, *args: str, output: Path | None = None, **kwargs
    ) -> subprocess.CompletedProcess:
        """inference.json of ``work/model.pt`` (the tiny network) on ``dataset`` into ``output`` (``work/out``)."""
        network = [
            a for key in ("filters", "kernel_size", "strides") for a in (f"--{key}", json.dumps(TINY_OVERRIDES[key]))
        ]
        return bundle_run(
            ["inference.json"],
            "--dataset_dir",
            str(dataset),
            "--ckpt_path",
            str(work / "model.pt"),
            "--output_dir",
            str(output or work / "out"),
            "--num_workers",
            "0",
            *network,
            *args,
            **kwargs,
        )


class TestTraining(CommandLineTestCase):
    def test_a_misspelt_key_and_wrong_values_are_refused_before_anything_runs(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            typo = self._train(work, "--max_epoch", "2")
            self.assert_one_line_error(typo, "unknown setting --max_epoch (did you mean --max_epochs?)")
            values = self._train(
                work, "--max_epochs", "2.5", "--overlap", "1.0", "--sw_batch_size", "0", "--device", "cuda:7"
            )
            message = self.assert_one_line_error(values, "4 problem(s) in the settings:")
            for expected in (
                "--max_epochs must be a whole number >= 1; got 2.5",
                "--overlap must be a number >= 0 and < 1",
                "--sw_batch_size must be a whole number >= 1; got 0",
                "--device must be a device this machine has",
            ):
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

    def test_a_run_that_starts_over_sets_aside_the_earlier_runs_checkpoints(self):
        """An earlier run left epoch 3; a run started over (--resume false) for 2 epochs, then resumed to 4, must
        continue from its own epoch 2, and the earlier run's files must still exist. Booleans typed on the command
        line (``false``, ``FALSE``) are read as such, and a typo is one line."""
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            short = ["--elect_epoch", "1", "--val_interval", "1"]
            self.assertEqual(self._train(work, "--max_epochs", "3", "--resume", "false", *short).returncode, 0)
            earlier = {p.name: p.read_bytes() for p in (work / "models").glob("*.pt")}
            self.assertIn("latest_checkpoint_epoch=3.pt", earlier)
            typo = self._train(work, "--resume", "maybe")
            self.assert_one_line_error(typo, "--resume must be true or false (also 1/0, yes/no, on/off); got 'maybe'")
            # booleans as typed on a command line; one encoder per sequence, unlike the earlier run
            short += ["--shared_encoder", "false", "--mlflow", "FALSE"]
            over = self._train(work, "--max_epochs", "2", "--resume", "false", *short)
            self.assertEqual(over.returncode, 0, over.stderr[-2000:])
            self.assertIn("this training starts over, so the earlier run's", over.stdout + over.stderr)
            self.assertIn("SupervisedTrainer - INFO - Epoch[1] Complete", over.stdout + over.stderr)
            self.assertFalse((work / "eval" / "mlruns.db").exists())
            weights = torch.load(work / "models" / "model.pt", weights_only=True)
            self.assertTrue(any(key.startswith("encoders.3.") for key in weights))
            (aside,) = (work / "models").glob("set_aside_*")
            self.assertEqual({p.name: p.read_bytes() for p in aside.iterdir()}, earlier)
            resumed = self._train(work, "--max_epochs", "4", *short)
            self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
            self.assertIn("latest_checkpoint_epoch=2.pt (epoch 2", resumed.stdout + resumed.stderr)
            self.assertEqual(
                sorted(p.name for p in (work / "models").glob("latest_*.pt")), ["latest_checkpoint_epoch=4.pt"]
            )
            self.assertEqual({p.name: p.read_bytes() for p in aside.iterdir()}, earlier)

    def test_a_truncated_disk_cache_file_is_recomputed_with_one_warning(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            args = [
                "--max_epochs",
                "1",
                "--elect_epoch",
                "1",
                "--cache",
                "disk",
                "--cache_dir",
                str(work / "cache"),
                "--resume",
                "false",
            ]
            self.assertEqual(self._train(work, *args).returncode, 0)
            cached = sorted((work / "cache").glob("*.pt"))
            cached[0].write_bytes(cached[0].read_bytes()[:500])  # a kill or a full disk while it was written
            again = self._train(work, *args)
            output = again.stdout + again.stderr
            self.assertEqual(again.returncode, 0, output[-3000:])
            self.assertNotIn("Traceback", output)
            self.assertEqual(output.count(f"cache file {cached[0]} (case SYNTH_"), 1, output[-3000:])
            torch.load(cached[0], weights_only=False)  # written again, whole

    def test_a_case_in_two_splits_is_found_before_training(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            splits = {
                "training": [
                    {
                        "case": "SYNTH_0000",
                        "flair": "SYNTH_0000/SYNTH_0000_flair.nii.gz",
                        "label": "SYNTH_0000/SYNTH_0000_seg.nii.gz",
                    }
                ]
            }
            splits["validation"] = splits["training"]
            (work / "datalist.json").write_text(json.dumps(splits))
            result = self._train(work, "--max_epochs", "1", "--elect_epoch", "1")
            self.assert_one_line_error(result, "puts cases in two splits: SYNTH_0000 (training and validation)")
            self.assertEqual(list((work / "models").glob("*.pt")), [])


class TestModelPathAndSplits(CommandLineTestCase):
    """Issue 26: one model path in every workflow; a case listed twice; an override run alone; a long case name."""

    def _trained_model_args(self, work: Path, metadata: Path) -> list[str]:
        """Elect or evaluate the tiny model in ``work/trained`` on the tiny dataset, writing under ``work`` only."""
        return [
            *("--bundle_root", str(work), "--ckpt_dir", str(work / "trained"), "--dataset_dir", str(self.dataset)),
            *("--output_dir", str(work / "eval"), "--metadata_file", str(metadata)),
            *("--datalist_file", str(work / "datalist.json"), "--mlflow", "false", *TINY_ARGS),
        ]

    def test_elect_and_evaluate_follow_ckpt_dir_and_leave_the_default_model_alone(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "models").mkdir()
            (work / "models" / "model.pt").write_bytes(b"another model, in the default place")
            (work / "trained").mkdir()
            tiny_checkpoint(work / "trained" / "model.pt")
            common = self._trained_model_args(work, fresh_metadata(work))
            elect = bundle_run(["train.json", "elect.json"], *common, "--resamples", "10")
            self.assertEqual(elect.returncode, 0, elect.stderr[-3000:])
            self.assertIsNotNone(read_record(work / "trained" / "model.pt")["teachers"])  # elected into this model
            evaluate = bundle_run(["train.json", "evaluate.json"], *common, "--lesion_wise", "false")
            self.assertEqual(evaluate.returncode, 0, evaluate.stderr[-3000:])
            self.assertIn(f"teachers ({work / 'trained' / 'model.pt'})", evaluate.stdout + evaluate.stderr)
            self.assertEqual((work / "models" / "model.pt").read_bytes(), b"another model, in the default place")

    def test_elect_into_a_read_only_model_folder_changes_nothing(self):
        """Issue 26, item 13: the folder is made immutable (``chattr +i``), which stops root as well."""
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "trained").mkdir()
            tiny_checkpoint(work / "trained" / "model.pt")
            metadata = fresh_metadata(work)
            before = (metadata.read_bytes(), (work / "trained" / "model.pt").read_bytes())
            if subprocess.run(["chattr", "+i", str(work / "trained")], capture_output=True).returncode != 0:
                self.skipTest("chattr +i is not allowed here")
            try:
                elect = bundle_run(["train.json", "elect.json"], *self._trained_model_args(work, metadata))
            finally:
                subprocess.run(["chattr", "-i", str(work / "trained")], check=True)
            self.assert_one_line_error(elect, f"cannot write to {work / 'trained'}")
            self.assertEqual((metadata.read_bytes(), (work / "trained" / "model.pt").read_bytes()), before)

    def test_a_case_listed_twice_is_refused(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            case = {
                "case": "SYNTH_0000",
                "flair": "SYNTH_0000/SYNTH_0000_flair.nii.gz",
                "label": "SYNTH_0000/SYNTH_0000_seg.nii.gz",
            }
            other = {
                **case,
                "case": "SYNTH_0003",
                "flair": "SYNTH_0003/SYNTH_0003_flair.nii.gz",
                "label": "SYNTH_0003/SYNTH_0003_seg.nii.gz",
            }
            (work / "datalist.json").write_text(json.dumps({"training": [case, case], "validation": [other]}))
            result = self._train(work, "--max_epochs", "1", "--elect_epoch", "1")
            self.assert_one_line_error(result, "training lists SYNTH_0000 twice")
            self.assertEqual(list((work / "models").glob("*.pt")), [])

    def test_an_override_config_run_alone_names_the_command(self):
        for override in ("evaluate.json", "elect.json"):
            result = bundle_run([override], "--dataset_dir", str(self.dataset))
            self.assert_one_line_error(
                result,
                f"configs/{override} is an override merged over train.json",
                "--config_file \"['configs/train.json','configs/" + override + "']\"",
            )

    def test_a_long_case_name_is_written(self):
        """A 225-character case name: the temporary file must not be longer than the final one."""
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            tiny_checkpoint(work / "model.pt")
            name = "C" * 225
            for path in (self.dataset / "SYNTH_0002").iterdir():
                target = work / "data" / name / path.name.replace("SYNTH_0002", name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
            result = self._infer(work, work / "data")
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            self.assertEqual(
                sorted(p.name for p in (work / "out").iterdir()),
                [f"{name}_flair_seg.nii.gz", f"{name}_modalities.json"],
            )


class TestInference(CommandLineTestCase):
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

    def test_a_flipped_bit_inside_a_gzip_file_is_found(self):
        """A stored (uncompressed) gzip block decompresses whatever its bytes: only the gzip checksum tells."""
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            tiny_checkpoint(work / "model.pt")
            dataset = self._one_case(work)
            path = dataset / "SYNTH_0002" / "SYNTH_0002_t1ce.nii.gz"
            raw = gzip.decompress(path.read_bytes())
            damaged = bytearray(gzip.compress(raw, compresslevel=0))
            damaged[len(damaged) // 2] ^= 0x40
            path.write_bytes(bytes(damaged))
            result = self._infer(work, dataset)
            self.assert_one_line_error(
                result, "SYNTH_0002_t1ce.nii.gz is truncated or corrupt: it fails its gzip checksum"
            )
            self.assertFalse((work / "out").exists() and any((work / "out").iterdir()))

    def test_an_output_folder_inside_the_dataset_folder_is_no_case(self):
        """--output_dir inside --dataset_dir: the second run skips the segmentations folder instead of calling it a
        case folder without images (and advising its removal)."""
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            tiny_checkpoint(work / "model.pt")
            dataset = self._one_case(work)
            for output in ("segs", "segs_again"):  # the second run meets the first run's output folder
                result = self._infer(work, dataset, output=dataset / output)
                self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            self.assertIn(
                f"skipping {dataset / 'segs'}: it holds segmentations or run outputs", result.stdout + result.stderr
            )
            for output in ("segs", "segs_again"):
                self.assertEqual(
                    sorted(p.name for p in (dataset / output).iterdir()),
                    ["SYNTH_0002_flair_seg.nii.gz", "SYNTH_0002_modalities.json"],
                )

    def test_a_sidecar_that_cannot_be_written_leaves_no_segmentation_without_it(self):
        """The segmentation is written, then its <case>_modalities.json fails (here: a folder holds its name)."""
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            tiny_checkpoint(work / "model.pt")
            (work / "out" / "SYNTH_0002_modalities.json").mkdir(parents=True)
            result = self._infer(work, self._one_case(work))
            self.assert_one_line_error(
                result,
                f"could not write {work / 'out' / 'SYNTH_0002_modalities.json'}",
                "SYNTH_0002_flair_seg.nii.gz was removed, so that no segmentation lacks its record",
            )
            self.assertEqual(sorted(p.name for p in (work / "out").iterdir()), ["SYNTH_0002_modalities.json"])

    def test_a_checkpoint_carrying_code_is_refused_unread(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            marker = code_carrying_checkpoint(work / "model.pt")
            result = self._infer(work, self._one_case(work))
            self.assert_one_line_error(
                result, "holds Python objects other than weights (posix.mkdir) and was refused unread"
            )
            self.assertNotIn("weights_only=False", result.stdout + result.stderr)
            self.assertFalse(marker.exists())

    def test_ckpt_export_of_a_checkpoint_carrying_code_is_one_line_and_never_runs_it(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            marker = code_carrying_checkpoint(work / "model.pt")
            result = monai_bundle(
                "ckpt_export",
                "network_def",
                "--filepath",
                work / "model.ts",
                "--ckpt_file",
                work / "model.pt",
                "--meta_file",
                fresh_metadata(work),
                "--config_file",
                "configs/inference.json",
                "--ckpt_path",
                work / "model.pt",
                timeout=300,
            )
            self.assert_one_line_error(result, "holds Python objects other than weights (posix.mkdir)")
            self.assertFalse(marker.exists())
            self.assertFalse((work / "model.ts").exists())

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
