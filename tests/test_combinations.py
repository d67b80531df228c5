"""Per-case metrics under every modality combination: the encode-once path equals the naive one; BraTS scoring."""

import unittest

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.metrics import compute_hausdorff_distance
from parameterized import parameterized
from scipy import ndimage
from torch import nn

from bundle.conventions import combination_masks
from bundle.metrics import (
    BRATS_HD95_PENALTY,
    LESION_HD95_PENALTY,
    case_combination_metrics,
    lesion_scores,
    region_scores,
)
from bundle.networks import LCKDNet


class OneForwardPerCombination(nn.Module):
    """The same network seen without ``forward_combinations``: evaluated once per combination."""

    def __init__(self, network: LCKDNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, x, mask=None):
        return self.network(x, mask)


def _case(present) -> dict:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 4, 24, 24, 24, generator=generator)
    mask = torch.tensor([present])
    label = torch.zeros(1, 3, 24, 24, 24)
    label[:, :, 6:18, 6:18, 6:18] = 1
    label[:, 2, 10:14, 10:14, 10:14] = 0
    return {"image": image * mask[:, :, None, None, None], "label": label, "mask": mask}


class TestCaseCombinationMetrics(unittest.TestCase):
    @parameterized.expand(
        [
            ("all_sequences_all_levels", [True] * 4, "all_levels"),
            ("t1_t2_missing_bottleneck", [True, False, True, False], "bottleneck"),
        ]
    )
    def test_encode_once_equals_naive(self, _, present, fill):
        torch.manual_seed(0)
        net = LCKDNet(filters=[4, 8, 16], kernel_size=[3, 3, 3], strides=[1, 2, 2], fill=fill).eval()
        inferer = SlidingWindowInferer((16, 16, 16), sw_batch_size=2, overlap=0.5)
        batch, masks = _case(present), combination_masks()
        once = case_combination_metrics(net, batch, inferer, masks, hd95_spacing=(1.0, 1.0, 1.0))
        naive = case_combination_metrics(
            OneForwardPerCombination(net), batch, inferer, masks, hd95_spacing=(1.0, 1.0, 1.0)
        )
        for key in ("dice", "hd95"):
            torch.testing.assert_close(once[key], naive[key], equal_nan=True)
        runnable = (masks & batch["mask"]).any(dim=1)
        self.assertTrue(torch.isnan(once["dice"][~runnable]).all())
        self.assertFalse(torch.isnan(once["dice"][runnable]).any())
        self.assertEqual(int(runnable.sum()), 15 if all(present) else 12)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def _pooled_hd95(truth: np.ndarray, pred: np.ndarray) -> float:
    """The BraTS HD95 by hand: surface distances both ways, pooled, one 95th percentile."""
    to_truth = ndimage.distance_transform_edt(~_surface(truth))[_surface(pred)]
    to_pred = ndimage.distance_transform_edt(~_surface(pred))[_surface(truth)]
    return float(np.percentile(np.concatenate([to_truth, to_pred]), 95))


class TestRegionScores(unittest.TestCase):
    """Scored as BraTS scores: empty regions and the pooled HD95."""

    def setUp(self):
        self.truth = torch.zeros(1, 3, 32, 32, 32, dtype=torch.bool)
        self.truth[0, :2, 8:20, 8:20, 8:20] = True  # TC and WT present, ET (channel 2) absent

    def test_empty_truth_and_empty_prediction_is_perfect(self):
        dice, hd95 = region_scores(self.truth, self.truth, (1.0, 1.0, 1.0))
        self.assertEqual(dice.tolist(), [1.0, 1.0, 1.0])
        self.assertEqual(hd95.tolist(), [0.0, 0.0, 0.0])

    def test_false_positive_on_an_empty_region_costs_dice_and_the_penalty(self):
        pred = self.truth.clone()
        pred[0, 2, 10:12, 10:12, 10:12] = True  # 8 voxels of ET where the case has none
        dice, hd95 = region_scores(pred, self.truth, (1.0, 1.0, 1.0))
        self.assertEqual(float(dice[2]), 0.0)
        self.assertAlmostEqual(float(hd95[2]), BRATS_HD95_PENALTY, places=2)

    def test_missed_region_costs_dice_and_the_penalty(self):
        pred = self.truth.clone()
        pred[0, 0] = False
        dice, hd95 = region_scores(pred, self.truth, (1.0, 1.0, 1.0))
        self.assertEqual(float(dice[0]), 0.0)
        self.assertAlmostEqual(float(hd95[0]), 373.13, places=2)

    def test_hd95_pools_both_directions(self):
        """A far false-positive blob: MONAI's max of one-way percentiles is larger than the BraTS pooled one."""
        pred = self.truth.clone()
        pred[0, 0, 26:30, 26:30, 26:30] = True
        _, hd95 = region_scores(pred, self.truth, (1.0, 1.0, 1.0))
        by_hand = _pooled_hd95(self.truth[0, 0].numpy(), pred[0, 0].numpy())
        self.assertAlmostEqual(float(hd95[0]), by_hand, places=4)
        monai = float(compute_hausdorff_distance(pred[:, :1].float(), self.truth[:, :1].float(), percentile=95)[0, 0])
        self.assertGreater(monai, by_hand + 1.0)

    def test_anisotropic_spacing_is_in_mm(self):
        pred = torch.roll(self.truth, shifts=2, dims=2)  # shifted 2 voxels along the first axis
        _, hd95_iso = region_scores(pred, self.truth, (1.0, 1.0, 1.0))
        _, hd95_2mm = region_scores(pred, self.truth, (2.0, 1.0, 1.0))
        self.assertAlmostEqual(float(hd95_2mm[0]), 2 * float(hd95_iso[0]), places=4)

    def test_election_ignores_a_region_the_case_does_not_have(self):
        torch.manual_seed(0)
        net = LCKDNet(filters=[4, 8, 16], kernel_size=[3, 3, 3], strides=[1, 2, 2]).eval()
        batch = {"image": torch.randn(1, 4, 32, 32, 32), "label": self.truth.float(), "mask": torch.ones(1, 4).bool()}
        inferer = SlidingWindowInferer((16, 16, 16))
        brats = case_combination_metrics(net, batch, inferer, torch.eye(4, dtype=torch.bool))["dice"]
        ignored = case_combination_metrics(net, batch, inferer, torch.eye(4, dtype=torch.bool), ignore_empty=True)
        self.assertFalse(torch.isnan(brats).any())
        self.assertTrue(torch.isnan(ignored["dice"][:, 2]).all())
        torch.testing.assert_close(ignored["dice"][:, :2], brats[:, :2])


class TestLesionScores(unittest.TestCase):
    def test_matched_missed_and_false_positive_lesions(self):
        truth = torch.zeros(1, 1, 40, 40, 40, dtype=torch.bool)
        truth[0, 0, 4:14, 4:14, 4:14] = True  # lesion A: found
        truth[0, 0, 25:30, 25:30, 25:30] = True  # lesion B: missed
        pred = torch.zeros_like(truth)
        pred[0, 0, 5:14, 4:14, 4:14] = True  # A, one slice short: Dice 2*900/(1000+900)
        pred[0, 0, 30:34, 2:6, 2:6] = True  # a false-positive lesion
        dice, hd95 = lesion_scores(pred, truth, (1.0, 1.0, 1.0))
        matched_dice = 2 * 900 / 1900
        matched_hd95 = float(region_scores(pred[..., :20, :20, :20], truth[..., :20, :20, :20], (1.0, 1.0, 1.0))[1][0])
        self.assertAlmostEqual(float(dice[0]), matched_dice / 3, places=5)  # 1 TP, 1 FN, 1 FP
        self.assertAlmostEqual(float(hd95[0]), (matched_hd95 + 2 * LESION_HD95_PENALTY) / 3, places=4)

    def test_no_lesion_anywhere_is_perfect_and_a_false_positive_is_not(self):
        empty = torch.zeros(1, 2, 16, 16, 16, dtype=torch.bool)
        pred = empty.clone()
        pred[0, 1, 2:5, 2:5, 2:5] = True
        dice, hd95 = lesion_scores(pred, empty, (1.0, 1.0, 1.0))
        self.assertEqual(dice.tolist(), [1.0, 0.0])
        self.assertEqual(hd95.tolist(), [0.0, LESION_HD95_PENALTY])
