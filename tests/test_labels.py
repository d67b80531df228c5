import unittest

import torch
from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses
from parameterized import parameterized

from bundle.transforms import RegionsToLabelsd


class TestRegionsToLabelsd(unittest.TestCase):
    @parameterized.expand([("brats2021", [0, 1, 2, 4]), ("brats2023", [0, 1, 2, 3]), ("msd", [0, 2, 1, 3])])
    def test_round_trip_from_brats_labels(self, convention, values):
        brats = torch.tensor([0, 1, 2, 4], dtype=torch.float32).reshape(1, 4, 1, 1)
        regions = ConvertToMultiChannelBasedOnBratsClasses()(brats).float()
        labels = RegionsToLabelsd("pred", convention=convention)({"pred": regions})["pred"]
        self.assertEqual(labels.flatten().tolist(), values)

    def test_et_outside_core_still_labelled_et(self):
        regions = torch.zeros(3, 1, 1, 1)
        regions[2] = 1  # ET alone
        self.assertEqual(RegionsToLabelsd("pred")({"pred": regions})["pred"].item(), 4)

    def test_bad_convention(self):
        with self.assertRaisesRegex(ValueError, "convention must be one of"):
            RegionsToLabelsd("pred", convention="brats2000")
