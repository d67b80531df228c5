import unittest

import torch
from parameterized import parameterized

from bundle.conventions import combination_masks
from bundle.errors import InputError
from bundle.networks import LCKDNet, record_election
from bundle.networks.inferer import case_window
from bundle.networks.lckdnet import _mean_fill, decode_record
from bundle.settings import check_settings

FILTERS = (4, 8, 16, 32)
CASES = [(shared, fill) for shared in (True, False) for fill in ("all_levels", "bottleneck")]


def tiny_net(**kwargs) -> LCKDNet:
    torch.manual_seed(0)
    return LCKDNet(filters=FILTERS, **kwargs)


class TestLCKDNet(unittest.TestCase):
    @parameterized.expand(CASES)
    def test_output_shape_for_every_mask(self, shared, fill):
        net = tiny_net(shared_encoder=shared, fill=fill).eval()
        masks = combination_masks()
        x = torch.randn(len(masks), 4, 16, 16, 16)
        with torch.no_grad():
            out = net(x, masks)
        self.assertEqual(out.shape, (15, 3, 16, 16, 16))
        self.assertTrue(torch.isfinite(out).all())

    @parameterized.expand(CASES)
    def test_training_output_and_gradient_reaches_every_encoder(self, shared, fill):
        net = tiny_net(shared_encoder=shared, fill=fill).train()
        mask = torch.tensor([[True, True, True, True], [False, True, False, True]])
        logits, bottleneck, used_mask = net(torch.randn(2, 4, 16, 16, 16), mask)
        self.assertEqual(logits.shape, (2, 3, 16, 16, 16))
        self.assertEqual(bottleneck.shape, (2, 4, FILTERS[-1], 2, 2, 2))
        self.assertTrue(torch.equal(used_mask, mask))
        (logits.mean() + bottleneck.mean()).backward()
        for index, encoder in enumerate(net.encoders):
            grads = [p.grad for p in encoder.parameters()]
            self.assertTrue(all(g is not None for g in grads), f"encoder {index} got no gradient")
            self.assertGreater(sum(float(g.abs().sum()) for g in grads), 0.0, f"encoder {index} has zero gradient")

    def test_mean_fill_is_exact_mean_of_present_features(self):
        feature = torch.randn(2, 4, 3, 2, 2, 2)
        mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
        filled = _mean_fill(feature, mask.float()[:, :, None, None, None, None])
        mean0 = (feature[0, 0] + feature[0, 2]) / 2
        torch.testing.assert_close(filled[0, 1], mean0)
        torch.testing.assert_close(filled[0, 3], mean0)
        torch.testing.assert_close(filled[0, 0], feature[0, 0])
        for absent in (0, 1, 2):
            torch.testing.assert_close(filled[1, absent], feature[1, 3])

    def test_network_fills_every_level_with_the_mean(self):
        net = tiny_net().eval()
        x = torch.randn(1, 4, 16, 16, 16)
        mask = torch.tensor([[True, False, True, False]])
        captured = []
        hooks = [fusion.register_forward_hook(lambda m, i, o: captured.append(i[0])) for fusion in net.fusions]
        with torch.no_grad():
            features = net.encode(x * mask.float()[:, :, None, None, None])
            net(x, mask)
        for hook in hooks:
            hook.remove()
        for level, fused_input in enumerate(captured):
            per_modality = fused_input.unflatten(1, (4, -1))
            expected = (features[level][:, 0] + features[level][:, 2]) / 2
            torch.testing.assert_close(per_modality[:, 1], expected)
            torch.testing.assert_close(per_modality[:, 3], expected)

    def test_bottleneck_fill_keeps_zero_input_skips(self):
        net = tiny_net(fill="bottleneck").eval()
        mask = torch.tensor([[True, False, True, False]])
        x = torch.randn(1, 4, 16, 16, 16)
        captured = []
        hook = net.fusions[0].register_forward_hook(lambda m, i, o: captured.append(i[0]))
        with torch.no_grad():
            features = net.encode(x * mask.float()[:, :, None, None, None])
            net(x, mask)
        hook.remove()
        torch.testing.assert_close(captured[0].unflatten(1, (4, -1))[:, 1], features[0][:, 1])

    def test_mask_inferred_from_zero_channels(self):
        net = tiny_net().eval()
        x = torch.randn(1, 4, 16, 16, 16)
        x[:, 1] = 0
        with torch.no_grad():
            torch.testing.assert_close(net(x), net(x, torch.tensor([[True, False, True, True]])))

    def test_absent_channel_content_is_ignored(self):
        net = tiny_net().eval()
        mask = torch.tensor([[True, False, True, False]])
        x = torch.randn(1, 4, 16, 16, 16)
        y = x.clone()
        y[:, 1] = 100.0
        with torch.no_grad():
            torch.testing.assert_close(net(x, mask), net(y, mask))

    def test_single_mask_row_broadcasts_over_windows(self):
        net = tiny_net().eval()
        x = torch.randn(3, 4, 16, 16, 16)
        mask = torch.tensor([[True, True, False, False]])
        with torch.no_grad():
            torch.testing.assert_close(net(x, mask), net(x, mask.expand(3, -1)))

    @parameterized.expand(CASES)
    def test_encode_once_equals_one_forward_per_combination(self, shared, fill):
        net = tiny_net(shared_encoder=shared, fill=fill).eval()
        x, masks = torch.randn(2, 4, 16, 16, 16), combination_masks()
        with torch.no_grad():
            once = net.forward_combinations(x, masks)
            naive = torch.cat([net(x * m[None, :, None, None, None], m[None]) for m in masks], dim=1)
        self.assertEqual(once.shape, (2, 45, 16, 16, 16))
        torch.testing.assert_close(once, naive, atol=1e-5, rtol=1e-5)

    @parameterized.expand([(True,), (False,)])
    def test_scripted_equals_eager(self, shared):
        net = tiny_net(shared_encoder=shared).eval()
        scripted = torch.jit.script(net)
        x = torch.randn(2, 4, 16, 16, 16)
        mask = torch.tensor([[True, False, False, True], [True, True, True, True]])
        with torch.no_grad():
            torch.testing.assert_close(scripted(x, mask), net(x, mask), atol=1e-5, rtol=1e-5)

    def test_anisotropic_strides_divide_each_axis_by_its_own_product(self):
        """One divisibility rule (bundle.networks.lckdnet.downsampling) for the network, the settings and the window:
        a level that keeps the depth asks for a depth that is a multiple of 4 here, not of 8."""
        net = LCKDNet(filters=[4, 8, 16, 32], kernel_size=[3, 3, 3, 3], strides=[1, 2, 2, [2, 2, 1]]).eval()
        self.assertEqual(net.divisor, [8, 8, 4])
        with torch.no_grad():
            self.assertEqual(net(torch.randn(1, 4, 16, 16, 12)).shape, (1, 3, 16, 16, 12))
            self.assertEqual(torch.jit.script(net).divisor, [8, 8, 4])
        self.assertEqual(case_window([64, 64, 64], [20, 20, 10], net.divisor), [24, 24, 12])
        with self.assertRaisesRegex(InputError, r"not divisible along axis 2 by 4"):
            check_settings({"patch_size": [16, 16, 10], "strides": [1, 2, 2, [2, 2, 1]]})

    @parameterized.expand(
        [
            ("wrong_channels", torch.randn(1, 3, 16, 16, 16), None, "one channel per modality"),
            ("not_divisible", torch.randn(1, 4, 20, 16, 16), None, r"divisible by \[8, 8, 8\] per axis"),
            ("empty_mask", torch.randn(1, 4, 16, 16, 16), torch.zeros(1, 4, dtype=torch.bool), "at least one present"),
            ("mask_shape", torch.randn(2, 4, 16, 16, 16), torch.ones(3, 4, dtype=torch.bool), "mask must have shape"),
        ]
    )
    def test_bad_input_is_explained(self, _, x, mask, message):
        with self.assertRaisesRegex(ValueError, message):
            tiny_net().eval()(x, mask)

    @parameterized.expand(
        [
            ({"fill": "everywhere"}, "fill must be one of"),
            ({"filters": (4, 8)}, "filters must give one positive width per level"),
            ({"strides": (1, 2, 2)}, "same length"),
            ({"modalities": ("flair", "flair")}, "unique"),
        ]
    )
    def test_bad_options_are_explained(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            LCKDNet(**{"filters": FILTERS, **kwargs})


TEACHERS = {"ET": "t1ce", "TC": "t1ce", "WT": "flair"}
FEDERATED = {"sites": ["site-1", "site-2"], "cases": {"ET": {"t1ce": {"site-1": 0, "site-2": 3, "total": 3}}}}


class TestRecord(unittest.TestCase):
    """The record in the weights: the teacher set, and a federated election's per-site case counts."""

    def test_a_local_election_records_teachers_only(self):
        net = tiny_net()
        record_election(net, {"teachers": TEACHERS, "election_dice": {}})
        self.assertEqual(
            decode_record(net.state_dict()["_extra_state"]), {"network": net.record["network"], "teachers": TEACHERS}
        )

    def test_federated_counts_travel_with_the_weights_until_a_local_election_replaces_them(self):
        net = tiny_net()
        record_election(net, {"teachers": TEACHERS, "federated": FEDERATED})
        loaded = tiny_net()
        loaded.load_state_dict(net.state_dict())
        self.assertEqual((loaded.record["teachers"], loaded.record["federated"]), (TEACHERS, FEDERATED))
        record_election(loaded, {"teachers": {**TEACHERS, "ET": "flair"}})
        self.assertNotIn("federated", decode_record(loaded.state_dict()["_extra_state"]))
        self.assertEqual(loaded.record["teachers"]["ET"], "flair")

    def test_no_election_clears_the_record_and_a_plain_module_is_left_alone(self):
        net = tiny_net()
        record_election(net, {"teachers": TEACHERS, "federated": FEDERATED})
        record_election(net, None)
        self.assertEqual((net.record["teachers"], net.record["federated"]), (None, None))
        plain_module = torch.nn.Linear(1, 1)
        record_election(plain_module, {"teachers": TEACHERS})
        self.assertFalse(hasattr(plain_module, "record"))
