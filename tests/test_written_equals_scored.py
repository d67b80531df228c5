"""What inference writes is what evaluation scores: a trained model through inference.json (no keys but where to read
and write) and through evaluate.json, both as their commands run them.

The model is trained on a 2 mm grid with 32^3 patches from 1 mm cases; inference and evaluation take that grid and
window from the model's record, crop to the brain, and write or score label maps on the 1 mm grid of the files.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bundle.data import make_dataset
from bundle.metadata import EXPECTED_DICE_KEY
from bundle.metrics import score_label_maps
from bundle.networks import read_record
from bundle.packaging import file_sha256
from tests.helpers import SUBPROCESS_ENV, TINY_OVERRIDES, monai_bundle, run_workflow
from tests.test_train_workflow import train

pytestmark = pytest.mark.slow  # whole workflows or subprocesses: `make test-fast` leaves them out

TRAINED = {"pixdim": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16], "filters": [8, 16, 32, 64]}


def _run_inference(settings: dict, folder: Path) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps(settings))
    return monai_bundle(
        "run", "--config_file", "configs/inference.json", "--args_file", folder / "args.json", env=SUBPROCESS_ENV
    )


class TestWrittenEqualsScored(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = Path(cls.tmp.name)
        make_dataset(root / "data", cases=10, size=32, seed=7, noise=0.2)
        train(
            root / "data",
            root,
            max_epochs=24,
            val_interval=24,
            elect_epoch=12,
            reelect_every=0,
            val_fraction=0.2,
            test_fraction=0.2,
            learning_rate=0.003,
            lr_schedule_epochs=1000,
            **TRAINED,
        )
        cls.root = root
        cls.split = json.loads((root / "data" / "datalist.json").read_text())
        cls.test_cases = [item["case"] for item in cls.split["test"]]
        (root / "test_cases").mkdir()
        for case in cls.test_cases:
            shutil.copytree(root / "data" / case, root / "test_cases" / case)
        cls.inference = _run_inference(
            {
                "dataset_dir": str(root / "test_cases"),
                "ckpt_path": str(root / "models" / "model.pt"),
                "output_dir": str(root / "written"),
                "mlflow": False,
                "num_workers": 0,
            },
            root / "inference",
        )
        out = root / "eval"
        kept = run_workflow(
            ["train.json", "evaluate.json"],
            dataset_dir=str(root / "data"),
            ckpt_path=str(root / "models" / "model.pt"),
            output_dir=str(out),
            metadata_file=str(root / "metadata.json"),
            filters=TRAINED["filters"],
            keep=("evaluate::evaluator",),
            **{k: TINY_OVERRIDES[k] for k in ("mlflow", "kernel_size", "strides", "num_workers")},
        )
        every = "flair+t1+t1ce+t2"
        cls.rows = {row["case"]: row for row in kept["evaluate::evaluator"].rows if row["combination"] == every}
        with open(out / "report" / "combinations.csv") as file:
            cls.reported = {row["case"]: row for row in csv.DictReader(file) if row["combination"] == every}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_the_model_carries_its_preprocessing(self):
        preprocessing = read_record(self.root / "models" / "model.pt")["preprocessing"]
        self.assertEqual(preprocessing["pixdim"], TRAINED["pixdim"])
        self.assertEqual(preprocessing["patch_size"], TRAINED["patch_size"])
        self.assertEqual((preprocessing["orientation"], preprocessing["label_convention"]), ("RAS", "brats2021"))
        metadata = json.loads((self.root / "metadata.json").read_text())["lckd"]
        self.assertEqual(metadata["preprocessing"], preprocessing)

    def test_evaluation_scores_exactly_the_files_inference_writes(self):
        self.assertEqual(self.inference.returncode, 0, self.inference.stderr[-3000:])
        self.assertEqual(sorted(self.rows), sorted(self.test_cases))
        for case in self.test_cases:
            written = nib.load(self.root / "written" / f"{case}_flair_seg.nii.gz")
            truth = nib.load(self.root / "data" / case / f"{case}_seg.nii.gz")
            self.assertEqual(written.shape, truth.shape)  # the grid of the files, not the 2 mm one
            scores = score_label_maps(
                np.asarray(written.dataobj), np.asarray(truth.dataobj), truth.header.get_zooms()[:3]
            )
            for name, values in scores.items():
                for region, value in zip(("TC", "WT", "ET"), values):
                    key = f"{name}_{region}"
                    self.assertAlmostEqual(self.rows[case][key], value, delta=1e-6, msg=(case, key))
                    # combinations.csv: the same numbers to 6 significant digits
                    np.testing.assert_allclose(float(self.reported[case][key]), value, rtol=1e-5, err_msg=key)

    def test_the_evaluation_records_its_table_beside_the_model(self):
        """metadata.json's Dice table per combination, what the clinical report's advice reads, is the report's."""
        table = json.loads((self.root / "metadata.json").read_text())[EXPECTED_DICE_KEY]
        self.assertEqual(table["model_sha256"], file_sha256(self.root / "models" / "model.pt"))
        self.assertEqual((table["split"], table["cases"], table["optimistic"]), ("test", len(self.test_cases), None))
        self.assertEqual(len(table["dice"]), 15)
        with open(self.root / "eval" / "report" / "summary.csv") as file:
            summary = {row["combination"]: row for row in csv.DictReader(file)}
        for combination, regions in table["dice"].items():
            for region, (mean, std) in regions.items():
                self.assertAlmostEqual(mean, float(summary[combination][f"dice_{region}_mean"]), delta=6e-5)  # rounded
                self.assertAlmostEqual(std, float(summary[combination][f"dice_{region}_std"]), delta=6e-5)

    def test_the_written_label_maps_are_good(self):
        """A trained model's files, not only well-formed ones: every test case's whole tumour found."""
        for case, row in self.rows.items():
            self.assertGreater(row["dice_WT"], 0.6, (case, row))
            self.assertGreater(row["dice_TC"], 0.4, (case, row))

    def test_a_disagreeing_config_key_warns_and_the_record_wins(self):
        run = _run_inference(
            {
                "dataset_dir": str(self.root / "test_cases"),
                "ckpt_path": str(self.root / "models" / "model.pt"),
                "output_dir": str(self.root / "written_1mm"),
                "pixdim": [1.0, 1.0, 1.0],
                "patch_size": [32, 32, 32],
                "num_workers": 0,
            },
            self.root / "inference_1mm",
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        output = run.stdout + run.stderr
        self.assertEqual(output.count("was trained with pixdim=[2.0, 2.0, 2.0], patch_size=[16, 16, 16]"), 1, output)
        for case in self.test_cases:
            name = f"{case}_flair_seg.nii.gz"
            self.assertTrue(
                np.array_equal(
                    np.asarray(nib.load(self.root / "written" / name).dataobj),
                    np.asarray(nib.load(self.root / "written_1mm" / name).dataobj),
                ),
                case,
            )


if __name__ == "__main__":
    unittest.main()
