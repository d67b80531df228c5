import unittest

import torch
from parameterized import parameterized

from bundle.losses import CKDLoss, LCKDLoss, RegionDiceBCELoss

ALL = torch.ones(2, 4, dtype=torch.bool)


class TestCKDLoss(unittest.TestCase):
    def test_zero_when_students_equal_teacher(self):
        same = torch.randn(2, 1, 8, 2, 2, 2).expand(2, 4, 8, 2, 2, 2)
        self.assertEqual(float(CKDLoss()(same, ALL, torch.tensor([2]))), 0.0)

    @parameterized.expand([("sum", 4.0), ("mean", 2.0)])
    def test_value_over_present_pairs(self, reduction, expected):
        features = torch.zeros(1, 4, 1, 1, 1, 1)
        features[0, :, 0] = torch.tensor([1.0, 3.0, 0.0, 10.0])[:, None, None, None]
        mask = torch.tensor([[True, True, True, False]])
        # teacher 2 (value 0); students 0 and 1 present (|1|, |3|), student 3 absent
        self.assertAlmostEqual(float(CKDLoss(reduction)(features, mask, torch.tensor([2]))), expected)

    def test_sum_is_the_papers_equation(self):
        """Two teachers, four present sequences: 6 (student, teacher) pairs, each at L1 distance 1 or 2."""
        features = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 4, 1, 1, 1, 1).repeat(2, 1, 2, 3, 3, 3)
        all_present = torch.ones(2, 4, dtype=torch.bool)
        teachers = torch.tensor([0, 2])  # values 0 and 2
        by_hand = sum(abs(s - t) for t in (0.0, 2.0) for s in (0.0, 1.0, 2.0, 3.0) if s != t)  # 1+2+3 + 2+1+1 = 10
        self.assertAlmostEqual(float(CKDLoss("sum")(features, all_present, teachers)), by_hand)  # per sample
        self.assertAlmostEqual(float(CKDLoss("mean")(features, all_present, teachers)), by_hand / 6)

    def test_absent_teacher_is_ignored(self):
        features = torch.randn(1, 4, 8, 2, 2, 2)
        mask = torch.tensor([[True, True, False, True]])
        self.assertEqual(float(CKDLoss()(features, mask, torch.tensor([2]))), 0.0)
        # with a second teacher present, only its pairs count
        two = CKDLoss()(features, mask, torch.tensor([0, 2]))
        one = CKDLoss()(features, mask, torch.tensor([0]))
        torch.testing.assert_close(two, one)

    def test_teacher_is_detached(self):
        features = torch.randn(1, 4, 8, 2, 2, 2, requires_grad=True)
        CKDLoss()(features, torch.ones(1, 4, dtype=torch.bool), torch.tensor([2])).backward()
        self.assertEqual(float(features.grad[0, 2].abs().sum()), 0.0)
        self.assertGreater(float(features.grad[0, 0].abs().sum()), 0.0)

    def test_unknown_reduction_is_refused(self):
        with self.assertRaisesRegex(ValueError, r"ckd_reduction must be one of \['sum', 'mean'\], got 'max'"):
            CKDLoss("max")

    def test_no_teacher_gives_zero(self):
        self.assertEqual(float(CKDLoss()(torch.randn(2, 4, 8, 2, 2, 2), ALL, torch.zeros(0, dtype=torch.long))), 0.0)


class TestRegionDiceBCELoss(unittest.TestCase):
    def test_empty_target_with_confident_logits_costs_a_lot(self):
        """Background everywhere, +20 logits: each channel's BCE is ~20 (a softmax CE across channels gives 0)."""
        logits, target = torch.full((1, 3, 4, 4, 4), 20.0), torch.zeros(1, 3, 4, 4, 4)
        self.assertGreater(float(RegionDiceBCELoss()(logits, target)), 60.0)

    def test_value_matches_a_hand_computation(self):
        torch.manual_seed(1)
        logits = torch.randn(2, 3, 4, 4, 4)
        target = (torch.rand(2, 3, 4, 4, 4) > 0.6).float()
        p = torch.sigmoid(logits)
        dice = 0.0
        for b in range(2):
            for r in range(3):
                intersection = (p[b, r] * target[b, r]).sum()
                dice += 1 - (2 * intersection + 1e-5) / (p[b, r].sum() + target[b, r].sum() + 1e-5)
        bce = 0.0
        for r in range(3):
            x, y = logits[:, r], target[:, r]
            bce += float(-(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x))).mean())
        expected = float(dice) / 6 + bce
        self.assertAlmostEqual(float(RegionDiceBCELoss()(logits, target)), expected, places=4)


class TestLCKDLoss(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.logits = torch.randn(2, 3, 8, 8, 8)
        self.target = (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
        self.features = torch.randn(2, 4, 8, 2, 2, 2)

    def test_ckd_off_until_teachers_are_set(self):
        loss = LCKDLoss(ckd_weight=0.1)
        plain = loss(self.logits, self.target)
        self.assertEqual(loss.last_terms["ckd_loss"], 0.0)
        torch.testing.assert_close(loss((self.logits, self.features, ALL), self.target), plain)
        loss.set_teachers({"ET": "t1ce", "TC": "t1ce", "WT": "flair"})
        self.assertEqual(loss.teacher_index.tolist(), [0, 2])
        total = loss((self.logits, self.features, ALL), self.target)
        self.assertGreater(loss.last_terms["ckd_loss"], 0.0)
        torch.testing.assert_close(float(total), float(plain) + 0.1 * loss.last_terms["ckd_loss"], atol=1e-5, rtol=1e-5)

    def test_zero_weight_turns_ckd_off(self):
        loss = LCKDLoss(ckd_weight=0.0, teachers={"ET": "t1ce", "TC": "t1ce", "WT": "flair"})
        torch.testing.assert_close(loss((self.logits, self.features, ALL), self.target), loss(self.logits, self.target))

    @parameterized.expand(
        [
            ({"ckd_weight": -0.1}, "ckd_weight must be a number >= 0"),
            ({"teachers": {"ET": "dwi", "TC": "t1ce", "WT": "flair"}}, "modalities in"),
            ({"teachers": {"XX": "t1", "TC": "t1ce", "WT": "flair"}}, "regions must be in"),
        ]
    )
    def test_bad_options_are_explained(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            LCKDLoss(**kwargs)
