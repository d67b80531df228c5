import json
import os
import shutil
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory
from unittest import mock

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from parameterized import parameterized

from bundle.conventions import case_name, file_stem
from bundle.data import discover_cases, load_datalist, make_dataset, split_cases
from bundle.errors import InputError
from tests.helpers import BUNDLE_ROOT, stacked_case

BRATS2023_NAMES = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}


def _hide_children_of(folder: Path):
    """``Path.iterdir`` as a folder without read permission looks to its owner's peers: nothing inside it."""
    real_iterdir = Path.iterdir

    def iterdir(self):
        return iter(()) if self == folder else real_iterdir(self)

    return iterdir


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

    def test_grouped_layout_as_brats_2018_is_downloaded(self):
        """BraTS 2018 and 2019 training folders hold HGG/ and LGG/, each a folder of case folders."""
        with TemporaryDirectory() as tmp:
            root = Path(tmp) / "MICCAI_BraTS_2018_Data_Training"
            for index, case in enumerate(sorted(self.root.glob("SYNTH_*"))):
                shutil.copytree(case, root / ("HGG" if index < 4 else "LGG") / case.name)
            cases = discover_cases(root)
            self.assertEqual([c["case"] for c in cases], [f"SYNTH_{i:04d}" for i in range(6)])
            self.assertEqual([c["group"] for c in cases], ["HGG"] * 4 + ["LGG"] * 2)
            self.assertEqual(cases[2]["mask"], [True, False, True, True])
            split = load_datalist(root, Path(tmp) / "datalist.json", val_fraction=0.2, test_fraction=0.2)
            stored = json.loads((Path(tmp) / "datalist.json").read_text())
            self.assertEqual(
                sorted((c["case"], c["group"]) for part in split.values() for c in part),
                [(c["case"], c["group"]) for c in cases],
            )
            self.assertTrue(stored["training"][0]["flair"].startswith(("HGG/", "LGG/")))

    def test_an_unreadable_case_folder_says_permission_denied(self):
        """A case folder this user may not read (simulated: the tests run as root, whom no permission stops)."""
        with TemporaryDirectory() as tmp:
            root = Path(tmp) / "data"
            shutil.copytree(self.root, root)
            locked = root / "SYNTH_0003"
            real_access, real_lexists = os.access, os.path.lexists
            with (
                mock.patch("os.access", lambda p, mode: Path(p) != locked and real_access(p, mode)),
                mock.patch("os.path.lexists", lambda p: Path(p).parent != locked and real_lexists(p)),
                mock.patch("pathlib.Path.iterdir", _hide_children_of(locked)),
            ):
                with self.assertRaisesRegex(InputError, r"SYNTH_0003 cannot be read \(permission denied\)"):
                    discover_cases(root)

    def test_unknown_layout_is_explained(self):
        with TemporaryDirectory() as tmp:
            (Path(tmp) / "case1").mkdir()
            with self.assertRaisesRegex(ValueError, "matches a known layout"):
                discover_cases(tmp)
            with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
                discover_cases(Path(tmp) / "absent")


def msd_copy(src: Path, dst: Path) -> None:
    """Rewrite a BraTS 2018-2021 layout as MSD Task01: 4D images, MSD labels, dataset.json.

    Case 0's T2 channel is left all zero, as a missing sequence is in 4-channel data.
    """
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    training = []
    for index, case in enumerate(sorted(src.glob("SYNTH_*"))):
        seg = nib.load(case / f"{case.name}_seg.nii.gz")
        image, _ = stacked_case(case)
        if index == 0:
            image[..., 3] = 0
        brats = np.asarray(seg.dataobj)
        msd = np.select([brats == 2, brats == 1, brats == 4], [1, 2, 3], 0).astype(np.uint8)
        name = f"BRATS_{index:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, seg.affine), dst / "imagesTr" / name)
        nib.save(nib.Nifti1Image(msd, seg.affine), dst / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (dst / "dataset.json").write_text(json.dumps({"name": "BrainTumour", "training": training, "test": []}))


class TestLayoutsGiveSameRegions(unittest.TestCase):
    """The three real layouts load through train.json's training preprocessing into the same TC/WT/ET regions."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = TemporaryDirectory()
        root = Path(cls.tmp.name)
        make_dataset(root / "brats2021", cases=2, size=16, seed=4)
        brats2023_copy(root / "brats2021", root / "brats2023")
        for case in sorted((root / "brats2023").glob("SYNTH_*")):  # BraTS 2023 labels ET as 3
            seg_path = case / f"{case.name}-seg.nii.gz"
            seg = nib.load(seg_path)
            data = np.asarray(seg.dataobj).copy()
            data[data == 4] = 3
            nib.save(nib.Nifti1Image(data, seg.affine), seg_path)
        msd_copy(root / "brats2021", root / "msd")
        cls.root = root

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def preprocess(self, dataset_dir: Path) -> list[dict]:
        parser = ConfigParser()
        parser.read_config(BUNDLE_ROOT / "configs" / "train.json")
        parser.update({"dataset_dir": str(dataset_dir), "patch_size": [16, 16, 16], "bundle_root": str(BUNDLE_ROOT)})
        transform = parser.get_parsed_content("train::case_preprocessing")
        return [transform(case) for case in discover_cases(dataset_dir)]

    def test_same_regions_in_every_layout(self):
        reference = self.preprocess(self.root / "brats2021")
        for layout in ("brats2023", "msd"):
            cases = self.preprocess(self.root / layout)
            self.assertEqual(len(cases), len(reference))
            for ours, theirs in zip(cases, reference):
                self.assertEqual(ours["label"].shape, (3, 16, 16, 16))
                self.assertTrue(torch.equal(ours["label"], theirs["label"]), layout)
                torch.testing.assert_close(ours["image"].as_tensor()[:3], theirs["image"].as_tensor()[:3])
        msd_first = self.preprocess(self.root / "msd")[0]
        self.assertEqual(msd_first["mask"].tolist(), [True, True, True, False])  # the all-zero T2 channel
        self.assertTrue(torch.all(msd_first["image"][3] == 0))
        self.assertEqual(reference[0]["label"].sum(dim=(1, 2, 3)).gt(0).tolist(), [True, True, True])


class TestCaseName(unittest.TestCase):
    @parameterized.expand(
        [
            ("case_key", {"case": "SYNTH_0001"}, "SYNTH_0001"),
            ("collated_case", {"case": ["SYNTH_0002"]}, "SYNTH_0002"),
            (
                "image_file",
                {"image": MetaTensor(torch.zeros(1), meta={"filename_or_obj": "/d/BRATS_001.nii.gz"})},
                "BRATS_001",
            ),
            (
                "collated_file",
                {"image": MetaTensor(torch.zeros(1), meta={"filename_or_obj": ["/d/X_flair.nii"]})},
                "X_flair",
            ),
            ("nothing", {"image": torch.zeros(1)}, "fallback"),
        ]
    )
    def test_case_name(self, _, data, expected):
        self.assertEqual(case_name(data, default="fallback"), expected)


class TestFileStem(unittest.TestCase):
    @parameterized.expand(
        [
            ("BRATS_001.nii.gz", "BRATS_001"),
            ("/data/Pat.00/Pat.00_flair.nii.gz", "Pat.00_flair"),
            ("Pat.01_flair.nii", "Pat.01_flair"),
            ("case.v2", "case.v2"),
        ]
    )
    def test_only_the_nifti_extension_goes(self, path, stem):
        self.assertEqual(file_stem(path), stem)
