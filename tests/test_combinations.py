"""Per-case metrics under every modality combination: the encode-once path equals the naive one; scored on label maps."""

import unittest

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.metrics import compute_hausdorff_distance
from parameterized import parameterized
from scipy import ndimage
from torch import nn

from bundle.conventions import combination_masks
from bundle.metrics import case_combination_metrics, score_label_maps
from bundle.metrics.scoring import BRATS2025_HD95_PENALTY
from bundle.networks import LCKDNet
from bundle.transforms import PredictionToLabelsd

ON_THE_NETWORK_GRID = PredictionToLabelsd("pred", transform=None)


class OneForwardPerCombination(nn.Module):
    """The same network seen without ``forward_combinations``: evaluated once per combination."""

    def __init__(self, network: LCKDNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, x, mask=None):
        return self.network(x, mask)


def _case(present) -> dict:
    """One case: a random image and a label map (BraTS 2018-2021 values) with oedema, core and enhancing rim."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 4, 24, 24, 24, generator=generator)
    mask = torch.tensor([present])
    label = torch.zeros(1, 1, 24, 24, 24)
    label[..., 6:18, 6:18, 6:18] = 2
    label[..., 8:16, 8:16, 8:16] = 4
    label[..., 10:14, 10:14, 10:14] = 1
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
        once = case_combination_metrics(net, batch, inferer, masks, ON_THE_NETWORK_GRID, scoring="brats2023")
        naive = case_combination_metrics(
            OneForwardPerCombination(net), batch, inferer, masks, ON_THE_NETWORK_GRID, scoring="brats2023"
        )
        for key in ("dice", "hd95", "lesion_dice", "lesion_hd95"):
            torch.testing.assert_close(once[key], naive[key], equal_nan=True)
        runnable = (masks & batch["mask"]).any(dim=1)
        self.assertTrue(torch.isnan(once["dice"][~runnable]).all())
        self.assertFalse(torch.isnan(once["dice"][runnable]).any())
        self.assertEqual(int(runnable.sum()), 15 if all(present) else 12)

    def test_scores_are_those_of_the_label_map(self):
        """What a combination scores is score_label_maps of the label map to_labels makes of its output."""
        torch.manual_seed(0)
        net = LCKDNet(filters=[4, 8, 16], kernel_size=[3, 3, 3], strides=[1, 2, 2]).eval()
        inferer = SlidingWindowInferer((16, 16, 16))
        batch = _case([True] * 4)
        metrics = case_combination_metrics(
            net, batch, inferer, combination_masks()[-1:], ON_THE_NETWORK_GRID, scoring="brats2025"
        )
        labels = ON_THE_NETWORK_GRID({"pred": inferer(batch["image"], net, mask=batch["mask"])[0]})["pred"]
        expected = score_label_maps(labels, batch["label"][0], rules="brats2025")
        for name, values in expected.items():
            np.testing.assert_allclose(metrics[name][0].numpy(), values, rtol=1e-6, equal_nan=True)

    def test_election_ignores_a_region_the_case_does_not_have(self):
        torch.manual_seed(0)
        net = LCKDNet(filters=[4, 8, 16], kernel_size=[3, 3, 3], strides=[1, 2, 2]).eval()
        batch = _case([True] * 4)
        batch["label"][batch["label"] == 4] = 1  # no enhancing tumour
        inferer = SlidingWindowInferer((16, 16, 16))
        single = torch.eye(4, dtype=torch.bool)
        brats = case_combination_metrics(net, batch, inferer, single, ON_THE_NETWORK_GRID)["dice"]
        ignored = case_combination_metrics(net, batch, inferer, single, ON_THE_NETWORK_GRID, ignore_empty=True)
        self.assertFalse(torch.isnan(brats).any())
        self.assertTrue(torch.isnan(ignored["dice"][:, 2]).all())
        torch.testing.assert_close(ignored["dice"][:, :2], brats[:, :2])


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def _pooled_hd95(truth: np.ndarray, pred: np.ndarray) -> float:
    """The BraTS HD95 by hand: surface distances both ways, pooled, one 95th percentile."""
    to_truth = ndimage.distance_transform_edt(~_surface(truth))[_surface(pred)]
    to_pred = ndimage.distance_transform_edt(~_surface(pred))[_surface(truth)]
    return float(np.percentile(np.concatenate([to_truth, to_pred]), 95))


class TestGlobalHD95(unittest.TestCase):
    """brats2025's global HD95: pooled both ways, in mm, 373 mm for a region only one side has."""

    def setUp(self):
        self.truth = np.zeros((32, 32, 32), np.uint8)
        self.truth[8:20, 8:20, 8:20] = 1  # necrosis only: TC and WT present, ET absent

    def test_hd95_pools_both_directions(self):
        """A far false-positive blob: MONAI's max of one-way percentiles is larger than the BraTS pooled one."""
        pred = self.truth.copy()
        pred[26:30, 26:30, 26:30] = 1
        hd95 = score_label_maps(pred, self.truth, lesion_wise=False)["hd95"][0]
        by_hand = _pooled_hd95(self.truth > 0, pred > 0)
        self.assertAlmostEqual(float(hd95), by_hand, places=4)
        monai = float(
            compute_hausdorff_distance(
                torch.as_tensor(pred > 0)[None, None].float(), torch.as_tensor(self.truth > 0)[None, None].float(), 95
            )[0, 0]
        )
        self.assertGreater(monai, by_hand + 1.0)

    def test_anisotropic_spacing_is_in_mm(self):
        pred = np.roll(self.truth, 2, axis=0)
        iso = score_label_maps(pred, self.truth, (1.0, 1.0, 1.0), lesion_wise=False)["hd95"][0]
        anisotropic = score_label_maps(pred, self.truth, (2.0, 1.0, 1.0), lesion_wise=False)["hd95"][0]
        self.assertAlmostEqual(float(anisotropic), 2 * float(iso), places=4)

    def test_a_false_positive_region_costs_the_penalty_and_an_empty_one_is_left_out(self):
        pred = self.truth.copy()
        pred[10:12, 10:12, 10:12] = 4  # ET where the case has none
        scores = score_label_maps(pred, self.truth, lesion_wise=False)
        self.assertEqual((float(scores["dice"][2]), float(scores["hd95"][2])), (0.0, BRATS2025_HD95_PENALTY))
        self.assertTrue(np.isnan(score_label_maps(self.truth, self.truth, lesion_wise=False)["dice"][2]))


if __name__ == "__main__":
    unittest.main()
