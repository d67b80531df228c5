import json
import shutil
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

from parameterized import parameterized

from bundle.data import discover_cases, load_datalist, make_dataset, split_cases

BRATS2023_NAMES = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}


def brats2023_copy(src: Path, dst: Path) -> None:
    """Rename a BraTS 2018-2021 layout into the BraTS 2023 one."""
    for case in sorted(src.glob("SYNTH_*")):
        (dst / case.name).mkdir(parents=True)
        for file in case.iterdir():
            name = file.name.replace(".nii.gz", "").split("_")[-1]
            shutil.copy(file, dst / case.name / f"{case.name}-{BRATS2023_NAMES.get(name, name)}.nii.gz")


class TestDiscovery(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = TemporaryDirectory()
        cls.root = Path(cls.tmp.name) / "brats2021"
        make_dataset(cls.root, cases=6, size=16, seed=0)
        (cls.root / "SYNTH_0002" / "SYNTH_0002_t1.nii.gz").unlink()
        cls.root2023 = Path(cls.tmp.name) / "brats2023"
        brats2023_copy(cls.root, cls.root2023)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @parameterized.expand([("brats2021", "auto"), ("brats2023", "auto"), ("brats2023", "brats2023")])
    def test_layouts_give_one_dict_per_case_with_mask(self, layout, dataset_format):
        root = self.root if layout == "brats2021" else self.root2023
        cases = discover_cases(root, dataset_format=dataset_format)
        self.assertEqual(len(cases), 6)
        case = next(c for c in cases if c["case"] == "SYNTH_0002")
        self.assertNotIn("t1", case)
        self.assertEqual(case["mask"], [True, False, True, True])
        self.assertTrue(case["label"].endswith(".nii.gz"))
        self.assertTrue(Path(case["t1ce"]).is_file())

    def test_split_is_disjoint_and_deterministic(self):
        cases = [{"case": str(i)} for i in range(10)]
        split = split_cases(cases, val_fraction=0.2, test_fraction=0.1, seed=1)
        self.assertEqual([len(split[k]) for k in ("training", "validation", "test")], [7, 2, 1])
        names = [c["case"] for part in split.values() for c in part]
        self.assertEqual(sorted(names), sorted(c["case"] for c in cases))
        self.assertEqual(split, split_cases(cases, 0.2, 0.1, seed=1))
        with self.assertRaisesRegex(ValueError, "too few"):
            split_cases(cases[:1], val_fraction=0.2)

    def test_datalist_written_once_and_reused(self):
        with TemporaryDirectory() as tmp:
            datalist_file = Path(tmp) / "datalist.json"
            first = load_datalist(self.root, datalist_file, seed=0)
            stored = json.loads(datalist_file.read_text())
            self.assertTrue(stored["training"][0]["flair"].startswith("SYNTH_"))  # relative to dataset_dir
            again = load_datalist(self.root, datalist_file, seed=99)  # the file wins over a new seed
            self.assertEqual(first, again)
            training = {c["case"] for c in first["training"]}
            validation = {c["case"] for c in first["validation"]}
            self.assertFalse(training & validation)

    def test_datalist_naming_missing_file_is_explained(self):
        with TemporaryDirectory() as tmp:
            datalist_file = Path(tmp) / "datalist.json"
            datalist_file.write_text(json.dumps({"training": [{"case": "X", "flair": "X/X_flair.nii.gz"}]}))
            with self.assertRaisesRegex(FileNotFoundError, "X_flair.nii.gz.*does not exist"):
                load_datalist(self.root, datalist_file)

    def test_unknown_layout_is_explained(self):
        with TemporaryDirectory() as tmp:
            (Path(tmp) / "case1").mkdir()
            with self.assertRaisesRegex(ValueError, "matches a known layout"):
                discover_cases(tmp)
            with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
                discover_cases(Path(tmp) / "absent")
