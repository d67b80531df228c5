"""End to end: configs/train.json through monai.bundle's ConfigWorkflow, as model-zoo tests do."""

import json
import math
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
import torch
from parameterized import parameterized

from bundle.errors import input_error_of
from bundle.networks import read_record
from bundle.reports import format_teachers
from tests.helpers import CONFIGS, TINY_OVERRIDES, TinyDatasetTestCase, fresh_metadata, run_workflow


def train(dataset_dir: Path, work: Path, keep=(), **overrides) -> dict:
    """Train with tiny settings into ``work`` (models/, eval/ and a copy of metadata.json)."""
    metadata = work / "metadata.json"
    if not metadata.exists():
        fresh_metadata(work)
    settings = {
        **TINY_OVERRIDES,
        "dataset_dir": str(dataset_dir),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "metadata_file": str(metadata),
        **overrides,
    }
    return run_workflow("train.json", workflow_type="train", keep=keep, meta_file=metadata, **settings)


@pytest.mark.slow
class TestTrainWorkflow(TinyDatasetTestCase):
    def test_train_elect_and_checkpoint(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            kept = train(
                self.dataset,
                work,
                keep=("validate::evaluator", "loss", "train::trainer"),
                max_epochs=2,
                val_interval=1,
                elect_epoch=1,
                dropping="none",  # every batch then holds (student, teacher) pairs
            )
            metrics, loss = kept["validate::evaluator"].state.metrics, kept["loss"]
            # StatsHandler prints the current teachers with each epoch's losses
            self.assertEqual(kept["train::trainer"].state.teachers, format_teachers(loss.teachers))
            self.assertRegex(kept["train::trainer"].state.teachers, r"^ET->\w+, TC->\w+, WT->\w+$")
            for key in ("val_mean_dice", "val_dice_et", "val_dice_tc", "val_dice_wt", "val_combinations_dice"):
                self.assertTrue(0.0 <= metrics[key] <= 1.0 and not math.isnan(metrics[key]), (key, metrics[key]))

            self.assertIsNotNone(loss.teachers)
            self.assertGreater(loss.last_terms["ckd_loss"], 0.0)  # epoch 2 distils

            latest = sorted((work / "models").glob("latest_checkpoint_epoch=*.pt"))
            self.assertEqual([p.name for p in latest], ["latest_checkpoint_epoch=2.pt"])
            checkpoint = torch.load(latest[0], weights_only=True)
            self.assertEqual(
                set(checkpoint), {"model", "optimizer", "lr_scheduler", "trainer", "lckd", "best_checkpoint"}
            )
            self.assertEqual(
                read_record(latest[0])["teachers"], loss.teachers
            )  # the weights' record, one copy per file
            self.assertNotIn("teachers", checkpoint["lckd"])
            # models/model.pt: a plain state_dict whose record holds the network keys and the teacher set
            best = torch.load(work / "models" / "model.pt", weights_only=True)
            self.assertIn("_extra_state", best)
            record = read_record(work / "models" / "model.pt")
            self.assertEqual(record["teachers"], loss.teachers)
            self.assertEqual(record["network"]["filters"], TINY_OVERRIDES["filters"])

            metadata = json.loads((work / "metadata.json").read_text())
            self.assertEqual(metadata["lckd"]["teachers"], loss.teachers)
            self.assertEqual(metadata["lckd"]["elected_at"]["epoch"], 1)
            self.assertEqual(metadata["version"], json.loads((CONFIGS / "metadata.json").read_text())["version"])
            self.assertTrue(any((work / "eval").glob("events.out.tfevents.*")))

    def test_settings_are_checked_before_the_data(self):
        with TemporaryDirectory() as tmp:
            with self.assertRaises(Exception) as raised:
                train(Path(tmp) / "no_dataset", Path(tmp), max_epochs=1, elect_epoch=3)
            self.assertIn("elect_epoch=3 is after the last epoch", str(input_error_of(raised.exception)))
            self.assertFalse(any((Path(tmp) / "models").glob("*.pt")))

    def test_patch_larger_than_the_image_is_padded(self):
        with TemporaryDirectory() as tmp:
            kept = train(
                self.dataset,
                Path(tmp),
                keep=("validate::evaluator",),
                patch_size=[48, 48, 48],
                max_epochs=1,
                val_interval=1,
                elect_epoch=1,
            )
            dice = kept["validate::evaluator"].state.metrics["val_mean_dice"]
            self.assertTrue(0.0 <= dice <= 1.0, dice)


@pytest.mark.slow
class TestModelSelection(TinyDatasetTestCase):
    @parameterized.expand([("combinations",), ("last",)])
    def test_model_pt_is_chosen_by_select_model(self, select_model):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            kept = train(
                self.dataset,
                work,
                keep=("validate::evaluator",),
                max_epochs=3,
                val_interval=1,
                elect_epoch=1,
                select_model=select_model,
            )
            last = kept["validate::evaluator"].state.metrics
            latest = torch.load(work / "models" / "latest_checkpoint_epoch=3.pt", weights_only=True)
            ((priority, _),) = latest["best_checkpoint"]["_saved"]  # the best-model saver's bookkeeping
            if select_model == "last":
                self.assertEqual(priority, 3)  # the last validated epoch
                final, best = latest["model"], torch.load(work / "models" / "model.pt", weights_only=True)
                self.assertTrue(all(torch.equal(final[k], best[k]) for k in final))
            else:  # the best mean Dice over the 15 combinations, at least the last epoch's
                self.assertTrue(0.0 <= last["val_combinations_dice"] <= priority <= 1.0, priority)

    def test_unknown_select_model_is_refused_before_training(self):
        with TemporaryDirectory() as tmp:
            with self.assertRaises(Exception) as raised:
                train(self.dataset, Path(tmp), max_epochs=1, elect_epoch=1, select_model="best")
            self.assertIn(
                "--select_model must be one of ['combinations', 'all_sequences', 'last']; got 'best'",
                str(input_error_of(raised.exception)),
            )
            self.assertFalse(any((Path(tmp) / "models").glob("*.pt")))
