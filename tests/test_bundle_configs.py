"""The bundle as MONAI clients see it: metadata, verify_net_in_out, inference.json and elect.json."""

import csv
import json
import math
import shutil
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import verify_net_in_out

from bundle.networks import read_record
from bundle.networks.model_file import DISK_READS
from bundle.packaging import REQUIRED_METADATA_KEYS
from tests.helpers import (
    CONFIGS,
    NETWORK_KEYS,
    TINY_NETWORK,
    TinyDatasetTestCase,
    fresh_metadata,
    run_inference,
    run_workflow,
    tiny_checkpoint,
)

METADATA = json.loads((CONFIGS / "metadata.json").read_text())


# the settings of a tiny run without the network's shape, which evaluation and election read from the checkpoint
WITHOUT_NETWORK_KEYS = {k: v for k, v in TINY_NETWORK.items() if k not in NETWORK_KEYS}


class TestMetadata(unittest.TestCase):
    def test_model_zoo_keys(self):
        for key in (*REQUIRED_METADATA_KEYS, "references", "eval_metrics"):  # model-zoo's schema, and more
            self.assertIn(key, METADATA)
        self.assertIn(METADATA["version"], METADATA["changelog"])

    def test_network_data_format(self):
        image = METADATA["network_data_format"]["inputs"]["image"]
        pred = METADATA["network_data_format"]["outputs"]["pred"]
        self.assertEqual(image["num_channels"], 4)
        self.assertEqual(list(image["channel_def"].values()), ["flair", "t1", "t1ce", "t2"])
        self.assertEqual(pred["num_channels"], 3)
        self.assertEqual(list(pred["channel_def"].values()), ["TC", "WT", "ET"])

    def test_verify_net_in_out(self):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(CONFIGS / "metadata.json"),
            config_file=str(CONFIGS / "inference.json"),
            device="cpu",
            ckpt_path="/nonexistent/model.pt",  # the network of the config, whatever a demo left in models/
        )


@pytest.mark.slow
class TestInferenceWorkflow(TinyDatasetTestCase):
    def test_segments_every_case_in_original_space(self):
        with TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "model.pt"
            tiny_checkpoint(ckpt)
            run_workflow(
                "inference.json",
                workflow_type="infer",
                dataset_dir=str(self.dataset),
                ckpt_path=str(ckpt),
                output_dir=str(Path(tmp) / "out"),
                **TINY_NETWORK,
            )
            self.assertEqual(DISK_READS[str(ckpt.resolve())], 1)  # record, preprocessing and weights: one read
            outputs = sorted((Path(tmp) / "out").glob("*.nii.gz"))
            self.assertEqual(len(outputs), 8)
            # SYNTH_0001 lacks t1 and t2: segmented from flair and t1ce, in the flair file's space
            source = nib.load(self.dataset / "SYNTH_0001" / "SYNTH_0001_flair.nii.gz")
            seg = nib.load(next(p for p in outputs if p.name.startswith("SYNTH_0001")))
            self.assertEqual(seg.shape, source.shape)
            np.testing.assert_allclose(seg.affine, source.affine, atol=1e-4)
            self.assertTrue(set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4})
            sidecar = json.loads((Path(tmp) / "out" / "SYNTH_0001_modalities.json").read_text())
            self.assertEqual(sidecar["modalities_used"], ["flair", "t1ce"])
            self.assertEqual(sidecar["modalities_missing"], ["t1", "t2"])

    def test_folder_where_no_case_has_t1_through_monai_bundle_run(self):
        """One new patient with flair + t1ce only: segmented, not refused (only training needs every sequence);
        the tiny network is rebuilt from the record in model.pt, not from the (default) config keys."""
        with TemporaryDirectory() as tmp:
            root = Path(tmp)
            shutil.copytree(self.dataset / "SYNTH_0001", root / "new_cases" / "SYNTH_0001")  # lacks t1 and t2
            tiny_checkpoint(root / "model.pt")
            settings = {
                **WITHOUT_NETWORK_KEYS,  # served without repeating the network's keys: model.pt records them
                "dataset_dir": str(root / "new_cases"),
                "ckpt_path": str(root / "model.pt"),
                "output_dir": str(root / "out"),
            }
            run_inference(settings, root)
            self.assertTrue((root / "out" / "SYNTH_0001_flair_seg.nii.gz").is_file())
            sidecar = json.loads((root / "out" / "SYNTH_0001_modalities.json").read_text())
            self.assertEqual(sidecar["modalities_missing"], ["t1", "t2"])


@pytest.mark.slow
class TestElectWorkflow(TinyDatasetTestCase):
    def test_elects_into_metadata_and_checkpoint(self):
        with TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "model.pt"
            tiny_checkpoint(ckpt)
            metadata = Path(tmp) / "metadata.json"
            fresh_metadata(Path(tmp))
            run_workflow(
                ["train.json", "elect.json"],
                dataset_dir=str(self.dataset),
                ckpt_path=str(ckpt),
                metadata_file=str(metadata),
                resamples=20,
                **WITHOUT_NETWORK_KEYS,  # the network is rebuilt from the checkpoint's record
            )
            self.assertEqual(DISK_READS[str(ckpt.resolve())], 1)  # read once; the new teachers written back
            block = json.loads(metadata.read_text())["lckd"]
            self.assertEqual(set(block["teachers"]), {"ET", "TC", "WT"})
            self.assertEqual(block["modalities"], ["flair", "t1", "t1ce", "t2"])
            for region in ("ET", "TC", "WT"):
                self.assertAlmostEqual(sum(block["win_rate"][region].values()), 1.0, places=3)
            self.assertEqual(read_record(ckpt)["teachers"], block["teachers"])  # written back into model.pt
            self.assertEqual(read_record(ckpt)["network"]["filters"], NETWORK_KEYS["filters"])


@pytest.mark.slow
class TestEvaluateWorkflow(TinyDatasetTestCase):
    def test_fifteen_combinations_per_case(self):
        with TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "model.pt"
            tiny_checkpoint(ckpt)
            out = Path(tmp) / "eval"
            run_workflow(
                ["train.json", "evaluate.json"],
                dataset_dir=str(self.dataset),
                datalist_file=str(Path(tmp) / "datalist.json"),
                ckpt_path=str(ckpt),
                output_dir=str(out),
                val_fraction=0.25,
                test_fraction=0.2,
                **WITHOUT_NETWORK_KEYS,  # the network is rebuilt from the checkpoint's record
            )
            self.assertEqual(DISK_READS[str(ckpt.resolve())], 1)  # record, teachers, weights and hash: one read
            self.assertTrue((out / "report").is_symlink())
            out = out / "report"
            with open(out / "combinations.csv") as file:
                rows = list(csv.DictReader(file))
            cases = {row["case"] for row in rows}
            self.assertEqual(len(cases), 2)
            self.assertEqual({row["split"] for row in rows}, {"test"})  # test_fraction 0.2: a held-out split
            self.assertTrue(
                (out / "summary.md")
                .read_text()
                .startswith(
                    "Split: test (2 cases), scored under BraTS 2025 (the official brats-evaluation package, glioma "
                    "rules)."
                )
            )
            self.assertNotIn("Optimistic", (out / "summary.md").read_text())
            self.assertEqual(len(rows), 15 * len(cases))
            self.assertEqual([row["combination"] for row in rows[:15]][:5], ["flair", "t1", "t1ce", "t2", "flair+t1"])
            for row in rows:
                for region in ("ET", "TC", "WT"):
                    value = float(row[f"dice_{region}"])
                    self.assertTrue(math.isnan(value) or 0.0 <= value <= 1.0, row)
                    hd = float(row[f"hd95_{region}"])
                    self.assertTrue(math.isnan(hd) or hd >= 0.0, row)
            with open(out / "summary.csv") as file:
                summary = list(csv.DictReader(file))
            self.assertEqual(len(summary), 16)
            self.assertEqual(summary[-1]["combination"], "average of combinations")
            self.assertIn("| flair+t1ce |", (out / "summary.md").read_text())
            self.assertEqual((out / "combinations.png").read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(
                [name for name in rows[0] if name.endswith("_ET")],
                ["dice_ET", "hd95_ET", "nsd_ET", "lesion_dice_ET", "lesion_hd95_ET", "lesion_nsd_ET"],
            )

    def test_cases_in_grouping_folders_are_reported_per_group(self):
        """BraTS 2018 as downloaded: case folders under HGG/ and LGG/; each group's average beside the overall one."""
        with TemporaryDirectory() as tmp:
            grouped = Path(tmp) / "MICCAI_BraTS_2018_Data_Training"
            for index, case in enumerate(sorted(self.dataset.glob("SYNTH_*"))):
                shutil.copytree(case, grouped / ("HGG" if index % 2 else "LGG") / case.name)
            ckpt = Path(tmp) / "model.pt"
            tiny_checkpoint(ckpt)
            out = Path(tmp) / "eval"
            run_workflow(
                ["train.json", "evaluate.json"],
                dataset_dir=str(grouped),
                ckpt_path=str(ckpt),
                output_dir=str(out),
                lesion_wise=False,
                hd95=False,
                val_fraction=0.25,
                test_fraction=0.5,
                **WITHOUT_NETWORK_KEYS,
            )
            with open(out / "report" / "summary.csv") as file:
                labels = [row["combination"] for row in csv.DictReader(file)]
            self.assertEqual(
                labels[-3:], ["average of combinations", "average of combinations, HGG", "average of combinations, LGG"]
            )
            with open(out / "report" / "combinations.csv") as file:
                rows = list(csv.DictReader(file))
            self.assertEqual({row["group"] for row in rows}, {"HGG", "LGG"})
            self.assertIn("| average of combinations, HGG (", (out / "report" / "summary.md").read_text())

    def test_a_split_that_chose_the_model_is_reported_as_optimistic(self):
        with TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "model.pt"
            tiny_checkpoint(ckpt)
            out = Path(tmp) / "eval"
            with self.assertLogs("bundle.engines.evaluation", "WARNING") as logs:
                run_workflow(
                    ["train.json", "evaluate.json"],
                    dataset_dir=str(self.dataset),
                    ckpt_path=str(ckpt),
                    output_dir=str(out),
                    split="validation",
                    scoring="brats2023",
                    lesion_wise=False,
                    **WITHOUT_NETWORK_KEYS,
                )
            self.assertIn("its scores are optimistic, not held-out", logs.output[0])
            title = (out / "report" / "summary.md").read_text().splitlines()[0]
            self.assertIn(
                "scored under BraTS 2023 lesion-wise rules. Optimistic: this split elected the teachers", title
            )
            with open(out / "report" / "combinations.csv") as file:
                self.assertEqual([n for n in next(csv.DictReader(file)) if n.endswith("_ET")], ["dice_ET", "hd95_ET"])
