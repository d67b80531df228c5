"""Anatomical phantoms (bundle/data/phantoms.py): BraTS geometry, label values per layout, tissue contrast, seeds."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from parameterized import parameterized

from bundle.conventions import LABEL_CONVENTIONS
from bundle.data import dataset_convention, discover_cases
from bundle.data.phantoms import CONTRAST, make_phantom, make_phantom_dataset, template_tissues
from bundle.errors import InputError
from bundle.metrics.teacher_choice import elect_teachers

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


def _best_interval_dice(images: list[np.ndarray], masks: list[np.ndarray], bins: int = 48) -> np.ndarray:
    """Per case, the Dice of the intensity rule "below lo or above hi" whose (lo, hi) is best on average over the
    cases: what one sequence alone tells about a region, without any network. Intensities are relative to the
    case's brain median, so the random scale and bias of each sequence do not matter."""
    edges = np.linspace(0.0, 2.5, bins + 1)
    below = []  # cumulative counts (positives, all) under each edge, per case
    for image, mask in zip(images, masks):
        values = image[image > 0] / np.median(image[image > 0])
        truth = mask[image > 0]
        cumulative = [
            np.concatenate([[0], np.cumsum(np.histogram(v, edges)[0])]) + (v < edges[0]).sum()
            for v in (values[truth], values)
        ]
        below.append((cumulative[0], cumulative[1], truth.sum(), truth.size))
    lo, hi = np.meshgrid(np.arange(bins + 1), np.arange(bins + 1), indexing="ij")
    valid = lo <= hi
    dice = []
    for pos_below, all_below, positives, voxels in below:
        tp = pos_below[lo] + positives - pos_below[hi]
        predicted = all_below[lo] + voxels - all_below[hi]
        dice.append(np.where(valid, 2 * tp / np.maximum(predicted + positives, 1), -1.0))
    best = np.unravel_index(np.argmax(np.mean(dice, axis=0)), lo.shape)
    return np.asarray([d[best] for d in dice])


class TestPhantomTeachers(unittest.TestCase):
    def test_intensity_alone_elects_the_expected_teachers(self):
        """The anatomical reason for ET->t1ce, TC->t1ce, WT->flair: per region, the sequence whose intensities
        alone delineate it best (the best "outside [lo, hi]" rule over 4 cases) is the expected teacher, and
        the bundle's election function picks it from that table."""
        cases = [make_phantom(np.random.default_rng([7, i]), SPACING) for i in range(4)]
        regions = {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)}  # network order
        dice = np.zeros((len(cases), len(CONTRAST), len(regions)))
        for n, modality in enumerate(CONTRAST):
            for r, values in enumerate(regions.values()):
                masks = [np.isin(label, values) for _, label, _ in cases]
                dice[:, n, r] = _best_interval_dice([images[modality] for images, _, _ in cases], masks)
        teachers, table = elect_teachers(torch.as_tensor(dice), list(CONTRAST))
        self.assertEqual(teachers, {"ET": "t1ce", "TC": "t1ce", "WT": "flair"}, table)


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
