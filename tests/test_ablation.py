"""The KD ablation end to end with tiny settings: two trainings, two evaluations, the reports."""

import tempfile
from pathlib import Path

import pytest

from bundle.analysis import ablate, parse_change, read_case_rows
from bundle.conventions import REPORT_REGIONS
from tests.helpers import TINY_OVERRIDES, TinyDatasetTestCase

pytestmark = pytest.mark.slow  # whole workflows or subprocesses: `make test-fast` leaves them out


class TestAblation(TinyDatasetTestCase):
    def test_with_and_without_ckd_over_two_seeds(self):
        with tempfile.TemporaryDirectory() as tmp:
            settings = {**TINY_OVERRIDES, "max_epochs": 2, "elect_epoch": 1, "val_interval": 2, "hd95": False}
            settings["datalist_file"] = str(Path(tmp) / "datalist.json")
            result = ablate(self.dataset, tmp, overrides=settings, seeds=2)
            out = Path(tmp)
            for name in ("kd_efficacy.csv", "kd_efficacy.md", "kd_efficacy.png", "alignment.csv", "alignment.md"):
                self.assertTrue((out / name).is_file(), name)
            for arm in ("A_seed0", "A_seed1", "B_seed0", "B_seed1"):
                self.assertTrue((out / arm / "models" / "model.pt").is_file())
                self.assertTrue((out / arm / "eval" / "report" / "combinations.csv").is_file())
            # each case's Dice is the mean of its two seeds' Dice
            seeds = [
                read_case_rows(out / arm / "eval" / "report" / "combinations.csv") for arm in ("A_seed0", "A_seed1")
            ]
            first = result["rows"]["with CKD"][0]
            self.assertAlmostEqual(first["dice_WT"], (seeds[0][0]["dice_WT"] + seeds[1][0]["dice_WT"]) / 2, places=5)
            self.assertEqual(result["names"], ("with CKD", "without CKD"))
            entries = result["entries"]
            self.assertEqual(len(entries), 15 * len(REPORT_REGIONS))
            for entry in entries:
                self.assertIn(entry["verdict"], ("helps", "hurts", "no clear effect", "too few cases"))
                if entry["cases"]:
                    self.assertAlmostEqual(
                        entry["difference"], entry["dice with CKD"] - entry["dice without CKD"], places=5
                    )
            self.assertEqual(set(result["teachers"]), set(REPORT_REGIONS))
            teachers = set(result["teachers"].values())
            self.assertEqual(len(result["alignment"]), 3 * len(teachers))
            for row in result["alignment"]:
                self.assertTrue(-1e-6 <= row["cka with CKD"] <= 1 + 1e-6)
                self.assertTrue(-1e-6 <= row["cka without CKD"] <= 1 + 1e-6)

    def test_parse_change(self):
        self.assertEqual(parse_change("ckd_weight=0"), ("ckd_weight", 0))
        self.assertEqual(parse_change("shared_encoder=false"), ("shared_encoder", False))
        self.assertEqual(parse_change("fill=bottleneck"), ("fill", "bottleneck"))
        with self.assertRaisesRegex(ValueError, "KEY=VALUE"):
            parse_change("ckd_weight")
