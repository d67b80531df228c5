import json
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

import nibabel as nib
import numpy as np
from parameterized import parameterized

from bundle.data import DEFAULT_TEACHERS, make_dataset, parse_teachers
from bundle.data.synthetic import main


class TestSyntheticData(unittest.TestCase):
    def test_layout_labels_and_affine(self):
        with TemporaryDirectory() as tmp:
            make_dataset(tmp, cases=2, size=32, seed=1)
            case = Path(tmp) / "SYNTH_0001"
            names = sorted(p.name for p in case.iterdir())
            self.assertEqual(names, [f"SYNTH_0001_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")])
            label = nib.load(case / "SYNTH_0001_seg.nii.gz")
            values = set(np.unique(np.asarray(label.dataobj)).tolist())
            self.assertEqual(values, {0, 1, 2, 4})
            self.assertEqual(label.shape, (32, 32, 32))
            np.testing.assert_allclose(np.abs(np.diag(label.affine)[:3]), 1.0)
            image = nib.load(case / "SYNTH_0001_flair.nii.gz").get_fdata()
            seg = np.asarray(label.dataobj)
            self.assertTrue(np.all(image[seg > 0] > 0))  # the tumour lies inside the brain
            self.assertEqual(float(image[0, 0, 0]), 0.0)  # skull-stripped background
            info = json.loads((Path(tmp) / "synthetic.json").read_text())
            self.assertEqual(info["teachers"], DEFAULT_TEACHERS)

    def test_deterministic_for_a_seed(self):
        with TemporaryDirectory() as a, TemporaryDirectory() as b, TemporaryDirectory() as c:
            make_dataset(a, cases=2, size=32, seed=5)
            make_dataset(b, cases=2, size=32, seed=5)
            make_dataset(c, cases=2, size=32, seed=6)
            first, same, other = (
                nib.load(Path(r) / "SYNTH_0001" / "SYNTH_0001_t1ce.nii.gz").get_fdata() for r in (a, b, c)
            )
            np.testing.assert_array_equal(first, same)
            self.assertFalse(np.array_equal(first, other))

    @parameterized.expand([("ET",), ("TC",), ("WT",)])
    def test_teacher_shows_its_region_most_clearly(self, region):
        teachers = {"ET": "t2", "TC": "t1", "WT": "t1ce"}
        with TemporaryDirectory() as tmp:
            make_dataset(tmp, cases=1, size=48, seed=0, teachers=teachers, noise=0.0)
            case = Path(tmp) / "SYNTH_0000"
            seg = np.asarray(nib.load(case / "SYNTH_0000_seg.nii.gz").dataobj)
            inside = {"ET": seg == 4, "TC": (seg == 1) | (seg == 4), "WT": seg > 0}[region]
            outside = {"ET": seg == 1, "TC": seg == 2, "WT": seg == 0}[region]
            contrast = {}
            for modality in ("flair", "t1", "t1ce", "t2"):
                image = nib.load(case / f"SYNTH_0000_{modality}.nii.gz").get_fdata()
                contrast[modality] = image[inside].mean() - image[outside & (image > 0)].mean()
            self.assertEqual(max(contrast, key=contrast.get), teachers[region])

    def test_missing_rate_never_empties_a_case(self):
        with TemporaryDirectory() as tmp:
            make_dataset(tmp, cases=12, size=16, seed=2, missing_rate=0.9)
            for case in sorted(Path(tmp).glob("SYNTH_*")):
                images = [p for p in case.iterdir() if not p.name.endswith("_seg.nii.gz")]
                self.assertGreaterEqual(len(images), 1, case)
            counts = [len(list(case.iterdir())) - 1 for case in Path(tmp).glob("SYNTH_*")]
            self.assertLess(sum(counts), 12 * 4)

    def test_parse_teachers(self):
        self.assertEqual(parse_teachers("ET=t2, TC=t1 ,WT=flair"), {"ET": "t2", "TC": "t1", "WT": "flair"})
        with self.assertRaisesRegex(ValueError, "bad teacher"):
            parse_teachers("ET=dwi,TC=t1,WT=flair")
        with self.assertRaisesRegex(ValueError, "name no modality for"):
            parse_teachers("ET=t1ce")

    def test_command_line(self):
        with TemporaryDirectory() as tmp:
            main(
                [
                    "--out",
                    tmp,
                    "--cases",
                    "2",
                    "--size",
                    "16",
                    "--teachers",
                    "ET=t2,TC=t2,WT=t1",
                    "--missing-rate",
                    "0.2",
                ]
            )
            info = json.loads((Path(tmp) / "synthetic.json").read_text())
            self.assertEqual(info["teachers"], {"ET": "t2", "TC": "t2", "WT": "t1"})
            self.assertEqual(info["cases"], 2)
            with self.assertRaises(SystemExit):
                main(["--out", tmp, "--teachers", "ET=nope"])
