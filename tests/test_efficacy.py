"""Paired comparison of two evaluations: bootstrap intervals, verdicts and the written reports."""

import math
import tempfile
import unittest
from pathlib import Path

import numpy as np
from parameterized import parameterized
from scipy import stats

from bundle.analysis import average_seeds, compare_runs, holm, paired_interval, read_case_rows, write_efficacy_reports
from bundle.analysis.mfh import student_gain
from bundle.reports.tables import csv_bytes


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


class TestPairedInterval(unittest.TestCase):
    @parameterized.expand(
        [
            ("consistent_gain", [0.1, 0.12, 0.09, 0.11, 0.1], True, False),
            ("consistent_loss", [-0.1, -0.12, -0.09, -0.11], False, True),
            ("symmetric", [0.1, -0.1, 0.1, -0.1, 0.05, -0.05], False, False),
        ]
    )
    def test_interval(self, _, differences, above, below):
        mean, low, high, p = paired_interval(differences)
        self.assertAlmostEqual(mean, float(np.mean(differences)))
        self.assertLessEqual(low, mean)
        self.assertGreaterEqual(high, mean)
        self.assertEqual(low > 0, above)
        self.assertEqual(high < 0, below)
        self.assertEqual(p < 0.05, above or below)

    def test_matches_scipy_paired_t(self):
        rng = np.random.default_rng(0)
        a, b = rng.normal(0.6, 0.1, 7), rng.normal(0.55, 0.1, 7)
        mean, low, high, p = paired_interval(a - b)
        test = stats.ttest_rel(a, b)
        self.assertAlmostEqual(p, float(test.pvalue), places=10)
        interval = test.confidence_interval(0.95)
        self.assertAlmostEqual(low, float(interval.low), places=10)
        self.assertAlmostEqual(high, float(interval.high), places=10)

    def test_covers_at_small_n(self):
        """True effect 0: the t interval covers it ~95 % of the time at n = 3 (a percentile bootstrap: 76 %)."""
        rng = np.random.default_rng(1)
        covered = 0
        for _ in range(2000):
            _, low, high, _ = paired_interval(rng.normal(0.0, 0.1, 3))
            covered += low <= 0 <= high
        self.assertAlmostEqual(covered / 2000, 0.95, delta=0.02)

    def test_one_case_has_no_interval(self):
        mean, low, high, p = paired_interval([0.2])
        self.assertEqual(mean, 0.2)
        self.assertTrue(all(math.isnan(v) for v in (low, high, p)))
        self.assertTrue(all(math.isnan(v) for v in paired_interval([math.nan])))


class TestHolm(unittest.TestCase):
    def test_by_hand(self):
        # sorted 0.01, 0.02, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 1 x 0.04)
        self.assertEqual([round(p, 6) for p in holm([0.04, 0.01, 0.02])], [0.04, 0.03, 0.04])
        self.assertEqual(holm([0.5, 0.9]), [1.0, 1.0])


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
            self.assertTrue(markdown.startswith("Split: not recorded."))  # these hand-made rows name no split
            self.assertIn("| flair | +0.050 [+0.050, +0.050] ▲ |", markdown)
            self.assertIn("3 of 9 combination × region cells: helps; 0: hurts; 0: too few cases.", markdown)
            self.assertEqual(paths["kd_efficacy.png"].read_bytes()[:4], b"\x89PNG")

    def test_no_verdict_below_five_cases(self):
        """One or two cases used to give 'helps' from a collapsed interval; now: too few cases."""
        for cases in (1, 2, 4):
            with_kd = [r for r in _rows(0.05, 0) if int(r["case"][1:]) < cases]
            without = [r for r in _rows(0.0, 1) if int(r["case"][1:]) < cases]
            for entry in compare_runs(with_kd, without):
                self.assertEqual(entry["verdict"], "too few cases", (cases, entry))
                self.assertTrue(math.isnan(entry["p_holm"]))
        five = compare_runs(
            [r for r in _rows(0.05, 0) if int(r["case"][1:]) < 5], [r for r in _rows(0.0, 1) if int(r["case"][1:]) < 5]
        )
        self.assertEqual({e["verdict"] for e in five if e["region"] == "ET" and e["combination"] == "flair"}, {"helps"})

    def test_holm_correction_removes_a_chance_finding(self):
        """One cell at p ~ 0.02 among 45: significant alone, not after correcting for the 45 tests."""
        rng = np.random.default_rng(3)
        combinations = [f"c{k}" for k in range(15)]
        rows_a, rows_b = [], []
        for case in range(8):
            for combination in combinations:
                shift = 0.03 if combination == "c0" else 0.0
                row = {"case": f"k{case}", "combination": combination}
                rows_a.append(
                    {**row, **{f"dice_{r}": 0.6 + shift + 0.03 * rng.standard_normal() for r in "ET TC WT".split()}}
                )
                rows_b.append({**row, **{f"dice_{r}": 0.6 + 0.03 * rng.standard_normal() for r in "ET TC WT".split()}})
        entries = compare_runs(rows_a, rows_b)
        self.assertEqual(len(entries), 45)
        small = [e for e in entries if e["p"] < 0.05]
        self.assertTrue(small)  # uncorrected, some cells look significant ...
        self.assertTrue(all(e["p_holm"] >= e["p"] for e in entries))
        self.assertTrue([e for e in small if e["verdict"] == "no clear effect"])  # ... and is not, once corrected

    def test_seeds_are_averaged_per_case(self):
        first, second = _rows(0.0, 0), _rows(0.1, 0)
        averaged = average_seeds([first, second])
        self.assertAlmostEqual(averaged[0]["dice_ET"], (first[0]["dice_ET"] + second[0]["dice_ET"]) / 2)
        self.assertTrue(math.isnan(averaged[0]["dice_WT"]))  # NaN in every seed stays NaN

    def test_no_shared_case_is_refused(self):
        with self.assertRaisesRegex(ValueError, "share no"):
            compare_runs(_rows(0, 0), [dict(r, case="other") for r in _rows(0, 0)])

    def test_student_gain_uses_students_only(self):
        gains = student_gain(
            _rows(0.05, 0, ("flair", "t1", "t1ce", "t2")),
            _rows(0.0, 0, ("flair", "t1", "t1ce", "t2")),
            {"ET": "t1ce", "TC": "t1ce", "WT": "flair"},
        )
        self.assertAlmostEqual(gains["ET"][0], 0.05, places=6)
        self.assertAlmostEqual(gains["TC"][0], 0.0, places=6)
