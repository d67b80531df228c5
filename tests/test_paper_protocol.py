"""The paper's protocol: split files (bundle.data.discovery.split_from_file), configs/paper_brats2018.json, and
inference.json's BraTS submission mode, through ``monai.bundle run``."""

from __future__ import annotations

import json
import os
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser
from parameterized import parameterized

from bundle.data import load_datalist, make_dataset
from bundle.data.discovery import split_from_file
from bundle.data.phantoms import make_phantom_dataset
from bundle.errors import InputError, InputFileError
from tests.helpers import (
    CONFIGS,
    SUBPROCESS_ENV,
    TINY_NETWORK,
    TinyDatasetTestCase,
    monai_bundle,
    run_inference,
    tiny_checkpoint,
)

OFFICIAL_SPLIT = CONFIGS / "splits" / "brats2018_lckd.json"
MODALITIES = ["flair", "t1", "t1ce", "t2"]


def _write(folder: Path, content: dict) -> Path:
    path = folder / "split.json"
    path.write_text(json.dumps(content))
    return path


class TestSplitFile(TinyDatasetTestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)
        self.names = sorted(p.name for p in Path(self.dataset).iterdir() if p.is_dir())
        self.lists = {"train": self.names[:5], "validation": self.names[5:7], "train_all": self.names[:7]}

    def test_case_name_lists_give_the_named_cases(self):
        datalist = split_from_file(self.dataset, _write(Path(self.folder.name), self.lists))
        self.assertEqual([item["case"] for item in datalist["training"]], self.names[:5])
        self.assertEqual([item["case"] for item in datalist["validation"]], self.names[5:7])
        self.assertEqual(datalist["test"], [])
        self.assertTrue(Path(datalist["training"][0]["flair"]).is_file())
        self.assertEqual(datalist["training"][1]["mask"], [True, False, True, False])  # SYNTH_0001 lacks t1, t2

    def test_missing_cases_are_named(self):
        lists = {**self.lists, "validation": ["Brats18_CBICA_AAA_1", "Brats18_CBICA_BBB_1", self.names[6]]}
        with self.assertRaisesRegex(
            InputError, r"2 case\(s\) listed in .*split.json are not in .*: Brats18_CBICA_AAA_1, Brats18_CBICA_BBB_1"
        ):
            split_from_file(self.dataset, _write(Path(self.folder.name), lists))

    def test_overlap_is_refused_unless_asked_for(self):
        path = _write(Path(self.folder.name), self.lists)
        lists = {"training": "train_all", "validation": "validation"}
        with self.assertRaisesRegex(
            InputError, r"puts 2 of the 2 validation cases in training too .*allow_split_overlap"
        ):
            split_from_file(self.dataset, path, lists)
        with self.assertLogs("bundle.data.discovery", "WARNING") as logs:
            datalist = split_from_file(self.dataset, path, lists, allow_overlap=True)
        self.assertEqual(len(datalist["training"]), 7)
        self.assertIn("the paper's train_all setting", logs.output[0])

    def test_a_case_validated_and_tested_is_refused_even_when_overlap_is_allowed(self):
        path = _write(Path(self.folder.name), self.lists)
        lists = {"training": "train", "validation": "validation", "test": "validation"}
        with self.assertRaisesRegex(
            InputError, r"puts 2 of the 2 test cases in validation too .*a case is validated or tested once"
        ):
            split_from_file(self.dataset, path, lists, allow_overlap=True)

    def test_decathlon_entry_naming_a_missing_file(self):
        entries = [{"flair": f"{n}/{n}_flair.nii.gz", "label": f"{n}/{n}_seg.nii.gz"} for n in self.names]
        entries[6]["flair"] = "nowhere/flair.nii.gz"
        path = _write(Path(self.folder.name), {"training": entries[:6], "validation": entries[6:]})
        with self.assertRaisesRegex(
            InputFileError,
            r"split.json names .*nowhere/flair.nii.gz .*key 'flair'\), which does not exist; restore the file or correct",
        ):
            split_from_file(self.dataset, path, {"training": "training", "validation": "validation"})

    @parameterized.expand(
        [({"training": "train_every"}, r"not \['train_every'\]"), ({"tests": "train"}, r"not \['tests'\]")]
    )
    def test_split_lists_that_do_not_fit_the_file(self, lists, message):
        with self.assertRaisesRegex(InputError, message):
            split_from_file(self.dataset, _write(Path(self.folder.name), self.lists), lists)

    def test_decathlon_datalist_with_relative_paths(self):
        entries = [
            {"flair": f"{n}/{n}_flair.nii.gz", "t1ce": f"{n}/{n}_t1ce.nii.gz", "label": f"{n}/{n}_seg.nii.gz"}
            for n in self.names
        ]
        path = _write(Path(self.folder.name), {"training": entries[:6], "validation": entries[6:]})
        datalist = load_datalist(
            self.dataset, split_file=path, split_lists={"training": "training", "validation": "validation"}
        )
        self.assertEqual(len(datalist["training"]), 6)
        self.assertEqual(datalist["validation"][0]["flair"], str(Path(self.dataset).resolve() / entries[6]["flair"]))
        self.assertEqual(datalist["validation"][0]["case"], f"{self.names[6]}_seg")


class TestPaperProfile(unittest.TestCase):
    def setUp(self):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "paper_brats2018.json")])
        self.parser = parser

    def test_official_recipe_values(self):
        """run.sh / train.py / BraTSDataSet.py of billhhh/LCKD, as docs/README.md traces them."""
        p = self.parser
        self.assertEqual(p["patch_size"], [160, 160, 80])  # --input_size=80,160,160 (D, H, W)
        self.assertEqual((p["batch_size"], p["num_samples"], p["learning_rate"], p["ckd_weight"]), (2, 1, 0.01, 0.1))
        self.assertEqual(p["optimizer"]["_target_"], "torch.optim.SGD")
        self.assertEqual((p["optimizer"]["momentum"], p["optimizer"]["nesterov"]), (0.99, True))
        iterations_per_epoch = -(-285 // 2)  # train_all, batch 2
        # run.sh: 80,000 iterations with every sequence, then the reloaded model from iteration 79,999 to 114,999
        self.assertEqual(p["warmup_epochs"], round(80_000 / iterations_per_epoch))
        self.assertEqual(p["max_epochs"] - p["warmup_epochs"], round(35_001 / iterations_per_epoch))
        self.assertEqual(p["max_epochs"], round(115_000 / iterations_per_epoch))
        self.assertEqual(p["elect_epoch"], round(5_000 / iterations_per_epoch))
        self.assertEqual(p["split_lists"], {"training": "train_all", "validation": "validation"})

    def test_learning_rate_follows_the_official_curves(self):
        """train.py's lr_poly(1e-2, i, num_steps, 0.9): over 80,000 iterations in the first run, then the 115,000-step
        curve continued from iteration 79,999 (about 3.4e-3), not restarted at 1e-2."""
        self.parser.update({"network_def": {"_target_": "torch.nn.Linear", "in_features": 1, "out_features": 1}})
        scheduler = self.parser.get_parsed_content("lr_scheduler")
        optimizer = scheduler.optimizer
        per_epoch = -(-285 // 2)

        def official(iteration, steps):
            return 1e-2 * (1 - iteration / steps) ** 0.9

        rates = []
        for _ in range(self.parser["max_epochs"]):
            rates.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
        self.assertAlmostEqual(rates[0], 1e-2)
        for epoch in (100, 400, 558):  # an epoch's rate holds for its 143 iterations: within 1e-4 of the official
            self.assertAlmostEqual(rates[epoch], official(epoch * per_epoch, 80_000), delta=1e-4)
        for epoch in (559, 600, 700, 803):
            self.assertAlmostEqual(rates[epoch], official(epoch * per_epoch, 115_000), delta=1e-4)
        self.assertAlmostEqual(rates[559], 3.4e-3, delta=1e-4)

    def test_official_split_shipped(self):
        lists = json.loads(OFFICIAL_SPLIT.read_text())
        self.assertEqual(
            {k: len(v) for k, v in lists.items() if k != "_desc_"},
            {"train": 228, "validation": 57, "train_all": 285, "online_validation": 66},
        )
        self.assertFalse(set(lists["train"]) & set(lists["validation"]))
        self.assertEqual(set(lists["train"]) | set(lists["validation"]), set(lists["train_all"]))

    def test_held_out_protocol_keeps_the_official_validation_cases_apart(self):
        """The local BraTS 2018 row's split: the 57 official validation cases are a test list nothing else touches."""
        official = json.loads(OFFICIAL_SPLIT.read_text())
        heldout = json.loads((CONFIGS / "splits" / "brats2018_lckd_heldout.json").read_text())
        self.assertEqual(
            {k: len(v) for k, v in heldout.items() if k != "_desc_"}, {"train": 182, "selection": 46, "test": 57}
        )
        self.assertEqual(heldout["test"], official["validation"])
        self.assertEqual(set(heldout["train"]) | set(heldout["selection"]), set(official["train"]))
        self.assertFalse(set(heldout["train"]) & set(heldout["selection"]))


@pytest.mark.slow
class TestPaperRunOnOfficialNames(unittest.TestCase):
    def test_profile_trains_one_epoch_on_the_official_split_through_monai_bundle_run(self):
        """285 case folders named as the official lists and grouped as BraTS 2018 is downloaded (HGG/, LGG/; links to 3
        tiny synthetic cases), the paper's command with a tiny network: the split file is read, the overlap warned
        about, one epoch trained, elected, validated."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_dataset(root / "sources", cases=3, size=32, seed=5)
            lists = json.loads(OFFICIAL_SPLIT.read_text())
            for index, case in enumerate(lists["train_all"]):  # grouped as the download is: HGG/ and LGG/
                source = root / "sources" / f"SYNTH_{index % 3:04d}"
                folder = root / "data" / ("HGG" if index < 210 else "LGG") / case
                folder.mkdir(parents=True)
                for suffix in ("flair", "t1", "t1ce", "t2", "seg"):
                    os.symlink(source / f"{source.name}_{suffix}.nii.gz", folder / f"{case}_{suffix}.nii.gz")
            # one epoch that still warms up, elects and validates: the schedule's epochs shrunk to 1
            overrides = {
                **TINY_NETWORK,
                "max_epochs": 1,
                "warmup_epochs": 0,
                "elect_epoch": 1,
                "val_interval": 1,
                "log_every": 50,
                "output_dir": str(root / "eval"),
                "ckpt_dir": str(root / "models"),
            }
            overrides["metadata_file"] = str(root / "metadata.json")
            (root / "metadata.json").write_text((CONFIGS / "metadata.json").read_text())
            (root / "args.json").write_text(json.dumps(overrides))
            run = monai_bundle(
                "run",
                "--config_file",
                "['configs/train.json','configs/paper_brats2018.json']",
                "--dataset_dir",
                root / "data",
                "--split_file",
                "configs/splits/brats2018_lckd.json",
                "--args_file",
                root / "args.json",
                env=SUBPROCESS_ENV,
            )
            output = run.stdout + run.stderr
            Path("/tmp/paper_run.log").write_text(output)
            self.assertEqual(run.returncode, 0, output[-3000:])
            self.assertIn("training 285 (train_all), validation 57 (validation), test 0", output)
            self.assertIn("puts 57 of the 57 validation cases in training too", output)
            self.assertIn("Epoch: 1/1, Iter: 100/143", output)  # 285 cases, batch 2
            self.assertTrue((root / "models" / "model.pt").is_file())
            self.assertIn("teachers", json.loads((root / "metadata.json").read_text())["lckd"])


@pytest.mark.slow
class TestSubmissionMode(TinyDatasetTestCase):
    @parameterized.expand([("brats2021", "PHANTOM_0000", {0, 1, 2, 4}), ("brats2023", "PHANTOM-0000", {0, 1, 2, 3})])
    def test_one_file_per_case_named_and_shaped_for_the_challenge(self, layout, case, allowed):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_phantom_dataset(root / "cases", cases=1, spacing=8.0, layout=layout)
            tiny_checkpoint(root / "model.pt")
            settings = {
                **{k: v for k, v in TINY_NETWORK.items() if k not in ("filters", "kernel_size", "strides")},
                "dataset_dir": str(root / "cases"),
                "ckpt_path": str(root / "model.pt"),
                "output_dir": str(root / "submission"),
                "submission": True,
                "et_min_voxels": 500,
                "min_component_voxels": 10,
                "pixdim": [8.0, 8.0, 8.0],
            }
            run_inference(settings, root)
            self.assertEqual(sorted(p.name for p in (root / "submission").iterdir()), [f"{case}.nii.gz"])
            source = nib.load(next((root / "cases" / case).glob("*seg.nii.gz")))
            written = nib.load(root / "submission" / f"{case}.nii.gz")
            self.assertEqual(written.shape, source.shape)
            np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
            self.assertEqual(written.get_data_dtype(), np.uint8)
            self.assertLessEqual(set(np.unique(np.asarray(written.dataobj)).tolist()), allowed)

    def test_sequences_scores_one_combination(self):
        """``--sequences`` (one submission per combination, as the paper's table needs) reaches the stacking."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_phantom_dataset(root, cases=1, spacing=8.0)
            case = root / "PHANTOM_0000"
            parser = ConfigParser()
            parser.read_config(str(CONFIGS / "inference.json"))
            parser.update({"sequences": ["t1ce", "t2"], "pixdim": [8.0, 8.0, 8.0]})
            item = {m: str(case / f"PHANTOM_0000_{m}.nii.gz") for m in ("flair", "t1", "t1ce", "t2")}
            out = parser.get_parsed_content("preprocessing")(item)
            self.assertEqual(out["mask"].tolist(), [False, False, True, True])
            self.assertEqual(out["image"][:2].abs().max().item(), 0.0)
            self.assertGreater(out["image"][2:].abs().amax(dim=(1, 2, 3)).min().item(), 0.0)


if __name__ == "__main__":
    unittest.main()
