"""Paired comparison of two evaluations: bootstrap intervals, verdicts and the written reports."""

import math
import tempfile
import unittest
from pathlib import Path

import numpy as np
from parameterized import parameterized

from bundle.analysis import compare_runs, paired_bootstrap, read_case_rows, write_efficacy_reports
from bundle.analysis.mfh import student_gain
from bundle.handlers.evaluation import csv_bytes


def _rows(offset_et: float, seed: int, combinations=("flair", "t1", "flair+t1")) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(12):
        for combination in combinations:
            base = 0.6 + 0.01 * case
            rows.append(
                {
                    "case": f"c{case}",
                    "combination": combination,
                    "dice_ET": base + offset_et + (0.02 * rng.standard_normal() if combination == "t1" else 0.0),
                    "dice_TC": base,
                    "dice_WT": math.nan if case == 0 else base,
                }
            )
    return rows


class TestPairedBootstrap(unittest.TestCase):
    @parameterized.expand(
        [
            ("consistent_gain", [0.1, 0.12, 0.09, 0.11, 0.1], True, False),
            ("consistent_loss", [-0.1, -0.12, -0.09, -0.11], False, True),
            ("symmetric", [0.1, -0.1, 0.1, -0.1, 0.05, -0.05], False, False),
        ]
    )
    def test_interval(self, _, differences, above, below):
        mean, low, high = paired_bootstrap(differences, resamples=2000)
        self.assertAlmostEqual(mean, float(np.mean(differences)))
        self.assertLessEqual(low, mean)
        self.assertGreaterEqual(high, mean)
        self.assertEqual(low > 0, above)
        self.assertEqual(high < 0, below)

    def test_nan_only(self):
        self.assertTrue(all(math.isnan(v) for v in paired_bootstrap([math.nan])))


class TestCompareRuns(unittest.TestCase):
    def test_verdicts_and_reports(self):
        with_kd, without = _rows(0.05, 0), _rows(0.0, 1)
        entries = compare_runs(with_kd, without)
        lookup = {(e["combination"], e["region"]): e for e in entries}
        self.assertEqual(len(entries), 9)
        self.assertEqual(lookup[("flair", "ET")]["verdict"], "helps")
        self.assertAlmostEqual(lookup[("flair", "ET")]["difference"], 0.05)
        self.assertEqual(lookup[("flair", "TC")]["verdict"], "no clear effect")
        self.assertEqual(lookup[("flair", "WT")]["cases"], 11)  # the NaN case is left out
        self.assertEqual(compare_runs(without, with_kd)[0]["verdict"], "hurts")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "a.csv").write_bytes(csv_bytes(with_kd))
            self.assertEqual(compare_runs(read_case_rows(Path(tmp) / "a.csv"), without)[0]["verdict"], "helps")
            paths = write_efficacy_reports(entries, tmp)
            self.assertEqual(sorted(paths), ["kd_efficacy.csv", "kd_efficacy.md", "kd_efficacy.png"])
            markdown = paths["kd_efficacy.md"].read_text()
            self.assertIn("| flair | +0.050 [+0.050, +0.050] ▲ |", markdown)
            self.assertIn("3 of 9 combination × region cells: helps", markdown)
            self.assertEqual(paths["kd_efficacy.png"].read_bytes()[:4], b"\x89PNG")

    def test_no_shared_case_is_refused(self):
        with self.assertRaisesRegex(ValueError, "share no"):
            compare_runs(_rows(0, 0), [dict(r, case="other") for r in _rows(0, 0)])

    def test_student_gain_uses_students_only(self):
        gains = student_gain(
            _rows(0.05, 0, ("flair", "t1", "t1ce", "t2")), _rows(0.0, 0, ("flair", "t1", "t1ce", "t2")),
            {"ET": "t1ce", "TC": "t1ce", "WT": "flair"},
        )  # fmt: skip
        self.assertAlmostEqual(gains["ET"][0], 0.05, places=6)
        self.assertAlmostEqual(gains["TC"][0], 0.0, places=6)
