"""BraTS submission post-processing on hand-made label maps: bundle.transforms.postprocessing."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from bundle.conventions import NETWORK_REGIONS
from bundle.errors import InputError
from bundle.metrics import score_label_maps
from bundle.transforms import RegionPostprocessingd, RegionsToLabelsd, SmallEnhancingToNecrosis, region_postprocessing

TC, WT, ET = (NETWORK_REGIONS.index(r) for r in ("TC", "WT", "ET"))


def _regions(size: int = 16) -> torch.Tensor:
    """A 6^3 tumour core (of which a 2^3 enhancing block) inside an 8^3 whole tumour, plus a 1-voxel WT speck."""
    regions = torch.zeros(3, size, size, size, dtype=torch.bool)
    regions[WT, 2:10, 2:10, 2:10] = True
    regions[TC, 3:9, 3:9, 3:9] = True
    regions[ET, 4:6, 4:6, 4:6] = True
    regions[WT, 14, 14, 14] = True
    return regions


class TestSmallEnhancingToNecrosis(unittest.TestCase):
    @parameterized.expand([(9, 0), (8, 8), (0, 8)])
    def test_et_below_the_threshold_becomes_necrosis(self, min_voxels, et_left):
        out = SmallEnhancingToNecrosis(min_voxels)(_regions())
        self.assertEqual(int(out[ET].sum()), et_left)
        self.assertEqual(int(out[TC].sum()), 6**3)  # the relabelled voxels stay tumour core
        self.assertEqual(int(out[WT].sum()), 8**3 + 1)

    def test_et_outside_the_predicted_core_joins_it(self):
        regions = _regions()
        regions[ET, 12, 12, 12] = True  # a stray ET voxel outside TC
        out = SmallEnhancingToNecrosis(500)(regions)
        self.assertTrue(bool(out[TC, 12, 12, 12]))
        self.assertEqual(int(out[ET].sum()), 0)

    def test_a_case_without_enhancement_scores_one_instead_of_zero(self):
        """BraTS rule: empty ET truth and empty prediction Dice 1, a false-positive speck Dice 0."""
        truth = _regions()
        truth[ET] = False
        pred = _regions()

        def et_dice(regions):
            labels = RegionsToLabelsd("x")({"x": regions})["x"]
            truth_labels = RegionsToLabelsd("x")({"x": truth})["x"]
            return float(score_label_maps(labels, truth_labels, rules="brats2023", lesion_wise=False)["dice"][ET])

        self.assertEqual((et_dice(pred), et_dice(SmallEnhancingToNecrosis(500)(pred))), (0.0, 1.0))

    @parameterized.expand([(-1,), (2.5,), ("500",), (True,)])
    def test_bad_threshold_is_refused(self, value):
        with self.assertRaisesRegex(InputError, "et_min_voxels must be a whole number of voxels >= 0"):
            SmallEnhancingToNecrosis(value)


class TestRegionPostprocessing(unittest.TestCase):
    def test_off_by_default(self):
        regions = _regions()
        self.assertTrue(torch.equal(torch.as_tensor(region_postprocessing()(regions)), regions))

    def test_small_components_are_removed_per_region(self):
        out = torch.as_tensor(region_postprocessing(min_component_voxels=2)(_regions()))
        self.assertFalse(bool(out[WT, 14, 14, 14]))  # the 1-voxel speck
        self.assertEqual([int(out[c].sum()) for c in (TC, WT, ET)], [6**3, 8**3, 8])

    def test_components_first_then_the_et_rule(self):
        regions = _regions()
        regions[ET, 11, 11, 11] = True  # a 1-voxel ET component: removed, leaving 8 ET voxels
        out = torch.as_tensor(region_postprocessing(min_component_voxels=2, et_min_voxels=9)(regions))
        self.assertEqual(int(out[ET].sum()), 0)

    def test_dictionary_version(self):
        out = RegionPostprocessingd("pred", min_component_voxels=2, et_min_voxels=500)({"pred": _regions()})["pred"]
        self.assertEqual([int(torch.as_tensor(out[c]).sum()) for c in (TC, WT, ET)], [6**3, 8**3, 0])

    def test_bad_component_size_is_refused(self):
        with self.assertRaisesRegex(InputError, "min_component_voxels must be a whole number"):
            region_postprocessing(min_component_voxels=-3)


if __name__ == "__main__":
    unittest.main()
