import unittest

import torch
from parameterized import parameterized

from bundle.conventions import (
    DEFAULT_MODALITIES,
    check_modalities,
    combination_masks,
    combination_name,
    modality_combinations,
)


class TestModalities(unittest.TestCase):
    def test_fifteen_combinations_in_fixed_order(self):
        combos = modality_combinations(DEFAULT_MODALITIES)
        self.assertEqual(len(combos), 15)
        self.assertEqual(combos[:4], [("flair",), ("t1",), ("t1ce",), ("t2",)])
        self.assertEqual(combos[4], ("flair", "t1"))
        self.assertEqual(combos[-1], DEFAULT_MODALITIES)
        self.assertEqual([len(c) for c in combos], sorted(len(c) for c in combos))

    def test_masks_match_combinations(self):
        masks = combination_masks()
        self.assertEqual(masks.shape, (15, 4))
        self.assertTrue(masks.any(dim=1).all())
        self.assertEqual(len({tuple(m.tolist()) for m in masks}), 15)
        self.assertEqual(masks[5].tolist(), [True, False, True, False])  # flair+t1ce
        self.assertEqual(combination_name(("flair", "t1ce")), "flair+t1ce")

    @parameterized.expand([([],), (["flair", "flair"],), ("flair",), ([""],), ([1, 2],)])
    def test_bad_lists_are_refused(self, modalities):
        with self.assertRaises(ValueError):
            check_modalities(modalities)

    def test_two_modalities(self):
        self.assertEqual(modality_combinations(["a", "b"]), [("a",), ("b",), ("a", "b")])
        self.assertTrue(torch.equal(combination_masks(["a", "b"]), torch.tensor([[1, 0], [0, 1], [1, 1]]).bool()))
