"""CaseMaskInferer: one modality mask per case, whatever the window sees."""

import unittest

import torch
from monai.inferers import SlidingWindowInferer

from bundle.networks import CaseMaskInferer, LCKDNet, presence_mask


class RecordingNet(torch.nn.Module):
    """Returns zeros; records the mask each window is called with (None: the window's own)."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def forward(self, x, mask=None):
        self.masks.append(tuple((presence_mask(x) if mask is None else mask).flatten().tolist()))
        return torch.zeros(x.shape[0], 3, *x.shape[2:])


def half_empty_t1() -> torch.Tensor:
    """flair everywhere, t1 only in the first half of the first axis, t1ce and t2 missing."""
    image = torch.zeros(1, 4, 32, 16, 16)
    image[:, 0] = 1.0
    image[:, 1, :16] = 1.0
    return image


class TestCaseMaskInferer(unittest.TestCase):
    def test_every_window_gets_the_case_mask(self):
        net = RecordingNet()
        CaseMaskInferer(roi_size=(16, 16, 16), sw_batch_size=1, overlap=0.0)(half_empty_t1(), net)
        self.assertEqual(set(net.masks), {(True, True, False, False)})
        per_window = RecordingNet()  # what a plain inferer without a mask does: the window decides
        SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=1, overlap=0.0)(half_empty_t1(), per_window)
        self.assertEqual(set(per_window.masks), {(True, True, False, False), (True, False, False, False)})

    def test_an_explicit_mask_is_used_as_given(self):
        net = RecordingNet()
        given = torch.tensor([[True, False, False, False]])
        CaseMaskInferer(roi_size=(16, 16, 16), sw_batch_size=1)(half_empty_t1(), net, mask=given)
        self.assertEqual(set(net.masks), {(True, False, False, False)})

    def test_same_logits_as_the_bundle_path_with_the_batch_mask(self):
        torch.manual_seed(0)
        net = LCKDNet(filters=[4, 8, 16], kernel_size=[3, 3, 3], strides=[1, 2, 2]).eval()
        image = half_empty_t1() * torch.rand(1, 4, 32, 16, 16)
        with torch.no_grad():
            label_path = CaseMaskInferer(roi_size=(16, 16, 16), sw_batch_size=2)(image, net)
            bundle_path = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2)(
                image, net, mask=torch.tensor([[True, True, False, False]])
            )
        torch.testing.assert_close(label_path, bundle_path)

    def test_a_case_without_any_sequence_is_refused(self):
        with self.assertRaisesRegex(ValueError, r"no sequence: every channel is zero"):
            CaseMaskInferer(roi_size=(16, 16, 16))(torch.zeros(1, 4, 16, 16, 16), RecordingNet())


if __name__ == "__main__":
    unittest.main()
