"""The three-site comparison's data and table (bundle/analysis/federated.py); the runs themselves are the
job's (tests/test_federated.py) and train.json's own tests."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

from bundle.analysis.federated import SITES, compare_training, format_comparison, make_sites
from bundle.data import discover_cases, load_datalist
from bundle.errors import InputError

MODALITIES = ("flair", "t1", "t1ce", "t2")


class TestMakeSites(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        cls.folders = make_sites(cls.folder.name, cases=2, test_cases=1, spacing=8.0)

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_each_site_lacks_its_sequences_and_names_its_own_cases(self):
        for index, (site, absent) in enumerate(SITES.items()):
            cases = sorted(path.name for path in self.folders[site].iterdir() if path.is_dir())
            self.assertEqual(cases, [f"SITE{index + 1}_0000", f"SITE{index + 1}_0001"])
            for case in cases:
                present = {m for m in MODALITIES if (self.folders[site] / case / f"{case}_{m}.nii.gz").is_file()}
                self.assertEqual(present, set(MODALITIES) - set(absent), f"{site}/{case}")
                self.assertTrue((self.folders[site] / case / f"{case}_seg.nii.gz").is_file())

    def test_pooled_holds_every_site_case_and_the_test_set_is_complete_and_listed(self):
        pooled = load_datalist(self.folders["pooled"], val_fraction=0.5)
        names = sorted(entry["case"] for entries in pooled.values() for entry in entries)
        self.assertEqual(len(names), 2 * len(SITES))
        self.assertEqual(len(set(names)), len(names))
        self.assertTrue(all((self.folders["pooled"] / name).is_symlink() for name in names))

        split = json.loads((self.folders["test"] / "split.json").read_text())
        self.assertEqual(split, {"test": ["TEST_0000"]})
        (case,) = discover_cases(self.folders["test"])
        self.assertEqual({m for m in MODALITIES if case.get(m)}, set(MODALITIES))


class TestCompareTraining(unittest.TestCase):
    def test_an_unknown_arm_is_refused_before_anything_is_made(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(
                InputError,
                r"arms must be a non-empty choice of \['site-1', .*got \['pooled', 'central'\] \(\['central'\] unknown\)",
            ):
                compare_training(tmp, arms=["pooled", "central"])
            self.assertEqual(list(Path(tmp).iterdir()), [])


class TestFormatComparison(unittest.TestCase):
    def test_one_row_per_arm_with_its_numbers(self):
        regions = {"ET": 0.5, "TC": 0.25, "WT": 0.75}
        arm = {
            "teachers": {"ET": "t1ce", "TC": "t1ce", "WT": "flair"},
            "dice": regions,
            "lesion_dice": regions,
            "dice_with_t1ce": {"ET": 0.6},
            "dice_without_t1ce": {"ET": 0.1},
            "seconds": 12,
        }
        lines = format_comparison({"pooled": arm, "federated": {**arm, "teachers": None}}).splitlines()
        self.assertEqual(len(lines), 4)
        self.assertEqual(
            lines[2],
            "| pooled | t1ce / t1ce / flair | 0.500 | 0.250 | 0.750 | 0.500 / 0.250 / 0.750 | 0.600 / 0.100 | 12 s |",
        )
        self.assertTrue(lines[3].startswith("| federated | - / - / - | 0.500 "))


if __name__ == "__main__":
    unittest.main()
