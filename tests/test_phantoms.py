"""Anatomical phantoms (bundle/data/phantoms.py): BraTS geometry, label values per layout, tissue contrast, seeds."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
from parameterized import parameterized

from bundle.conventions import LABEL_CONVENTIONS
from bundle.data import dataset_convention, discover_cases
from bundle.data.phantoms import CONTRAST, make_phantom, make_phantom_dataset, template_tissues
from bundle.errors import InputError

SPACING = 4.0  # 60 x 60 x 39 voxels: the BraTS grid at 4 mm


class TestPhantom(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.images, cls.label, cls.affine = make_phantom(np.random.default_rng([0, 0]), SPACING)

    def test_brats_grid_and_geometry(self):
        self.assertEqual(self.label.shape, (60, 60, 39))
        np.testing.assert_allclose(np.abs(np.diag(self.affine)[:3]), [SPACING] * 3)
        brain = self.images["t1"] > 0
        self.assertTrue(all((brain == (image > 0)).all() for image in self.images.values()))  # skull-stripped, one mask
        extent = np.argwhere(brain)
        # inside the grid left-right and front-back; the brain stem may reach the lowest slice, as in BraTS
        self.assertTrue((extent.min(0)[:2] > 0).all() and (extent.max(0) < np.asarray(self.label.shape) - 1).all())
        centre = extent.mean(0) * SPACING
        self.assertGreater(np.abs(centre - np.asarray([120.0, 120.0, 77.5])).max(), 2.0)  # off-centre, as in BraTS

    def test_labels_are_brats_values_inside_the_brain(self):
        self.assertTrue(set(np.unique(self.label).tolist()) <= {0, 1, 2, 4})
        self.assertTrue((self.images["t1"][self.label > 0] > 0).all())
        self.assertGreater((self.label == 2).sum(), (self.label == 4).sum())  # oedema around the core

    def test_contrast_order_inside_each_tissue_class(self):
        tissues = template_tissues()
        self.assertEqual(tissues["wm"].shape, (197, 233, 189))
        means = {m: {} for m in self.images}
        for modality, image in self.images.items():
            for name, value in (("edema", 2), ("enhancing", 4)):
                means[modality][name] = float(image[self.label == value].mean())
        # the decisive contrasts: the enhancing rim bright in T1ce, oedema bright in FLAIR
        self.assertGreater(means["t1ce"]["enhancing"], 1.5 * means["t1ce"]["edema"])
        self.assertGreater(means["flair"]["edema"], means["flair"]["enhancing"])
        healthy = (self.images["t1"] > 0) & (self.label == 0)
        relative = {m: means[m]["edema"] / float(image[healthy].mean()) for m, image in self.images.items()}
        self.assertGreater(relative["flair"], 1.3)  # oedema bright in FLAIR ...
        self.assertLess(relative["t1"], relative["flair"])  # ... darker, relative to the brain, in T1
        for modality, table in CONTRAST.items():  # the table itself: T1 WM > GM > CSF, FLAIR CSF suppressed
            if modality in ("t1", "t1ce"):
                self.assertGreater(table["wm"], table["gm"])
                self.assertGreater(table["gm"], table["csf"])
        self.assertLess(CONTRAST["flair"]["csf"], CONTRAST["flair"]["gm"])
        self.assertEqual(max(CONTRAST["t2"], key=CONTRAST["t2"].get), "csf")

    def test_same_seed_same_case_other_seed_other_case(self):
        again, label, _ = make_phantom(np.random.default_rng([0, 0]), SPACING)
        np.testing.assert_array_equal(label, self.label)
        np.testing.assert_array_equal(again["flair"], self.images["flair"])
        _, other, _ = make_phantom(np.random.default_rng([0, 1]), SPACING)
        self.assertFalse(np.array_equal(other, self.label))


class TestPhantomDataset(unittest.TestCase):
    @parameterized.expand([("brats2021", "brats2021"), ("brats2023", "brats2023"), ("msd", "msd")])
    def test_each_layout_is_read_by_the_bundle(self, layout, convention):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / layout
            make_phantom_dataset(root, cases=2, seed=1, spacing=SPACING, layout=layout)
            self.assertEqual(dataset_convention(root), convention)
            cases = discover_cases(root)
            self.assertEqual(len(cases), 2)
            label = np.asarray(nib.load(cases[0]["label"]).dataobj)
            allowed = {0, *LABEL_CONVENTIONS[convention].values()}
            self.assertTrue(set(np.unique(label).tolist()) <= allowed, np.unique(label))
            self.assertEqual(json.loads((root / "phantoms.json").read_text())["layout"], layout)

    def test_bad_layout_is_refused(self):
        with self.assertRaisesRegex(InputError, r"layout must be one of \['brats2021', 'brats2023', 'msd'\]"):
            make_phantom_dataset("/tmp/unused", layout="brats2019")
