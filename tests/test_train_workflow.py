"""End to end: configs/train.json through monai.bundle's ConfigWorkflow, as model-zoo tests do."""

import json
import math
import shutil
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.conftest import BUNDLE_ROOT, TINY_OVERRIDES

TEACHERS = {"ET": "t1ce", "TC": "t1ce", "WT": "flair"}


def train_workflow(dataset_dir: Path, work: Path, **overrides) -> ConfigWorkflow:
    metadata = work / "metadata.json"
    if not metadata.exists():
        shutil.copy(BUNDLE_ROOT / "configs" / "metadata.json", metadata)
    settings = {
        **TINY_OVERRIDES,
        "bundle_root": str(BUNDLE_ROOT),
        "dataset_dir": str(dataset_dir),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "metadata_file": str(metadata),
        **overrides,
    }
    return ConfigWorkflow(
        config_file=str(BUNDLE_ROOT / "configs" / "train.json"),
        meta_file=str(metadata),
        logging_file=str(BUNDLE_ROOT / "configs" / "logging.conf"),
        workflow_type="train",
        **settings,
    )


@pytest.mark.usefixtures("tiny_dataset")
class TestTrainWorkflow(unittest.TestCase):
    @pytest.fixture(autouse=True)
    def _dataset(self, tiny_dataset):
        self.dataset = tiny_dataset

    def test_train_elect_and_checkpoint(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            workflow = train_workflow(self.dataset, work, max_epochs=2, val_interval=1, elect_epoch=1)
            workflow.initialize()
            self.assertFalse(workflow.check_properties())  # no required property missing
            workflow.run()
            evaluator = workflow.parser.get_parsed_content("validate::evaluator")
            loss = workflow.parser.get_parsed_content("loss")
            workflow.finalize()

            metrics = evaluator.state.metrics
            for key in ("val_mean_dice", "val_dice_et", "val_dice_tc", "val_dice_wt"):
                self.assertTrue(0.0 <= metrics[key] <= 1.0 and not math.isnan(metrics[key]), (key, metrics[key]))

            self.assertIsNotNone(loss.teachers)
            self.assertGreater(loss.last_terms["ckd_loss"], 0.0)  # epoch 2 distils

            latest = sorted((work / "models").glob("latest_checkpoint_epoch=*.pt"))
            self.assertEqual([p.name for p in latest], ["latest_checkpoint_epoch=2.pt"])
            checkpoint = torch.load(latest[0], weights_only=True)
            self.assertEqual(set(checkpoint), {"model", "optimizer", "lr_scheduler", "trainer", "lckd"})
            self.assertEqual(checkpoint["lckd"]["teachers"], loss.teachers)
            best = torch.load(work / "models" / "model.pt", weights_only=True)
            self.assertIn("model", best)

            metadata = json.loads((work / "metadata.json").read_text())
            self.assertEqual(metadata["lckd"]["teachers"], loss.teachers)
            self.assertEqual(metadata["lckd"]["elected_at"]["epoch"], 1)
            self.assertEqual(metadata["version"], json.loads((BUNDLE_ROOT / "configs/metadata.json").read_text())["version"])
            self.assertTrue(any((work / "eval").glob("events.out.tfevents.*")))

    def test_elect_epoch_after_training_is_refused(self):
        with TemporaryDirectory() as tmp:
            workflow = train_workflow(self.dataset, Path(tmp), max_epochs=1, elect_epoch=3)
            workflow.initialize()
            with self.assertRaises(Exception) as raised:
                workflow.run()
            self.assertIn("elect_epoch=3 is after the last epoch", str(raised.exception.__cause__))
