"""Per-case metrics under every modality combination: the encode-once path equals the naive one."""

import unittest

import torch
from monai.inferers import SlidingWindowInferer
from parameterized import parameterized
from torch import nn

from bundle.handlers import case_combination_metrics
from bundle.modalities import combination_masks
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
