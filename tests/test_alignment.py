"""Alignment diagnostics on hand-made features with known answers."""

import math
import unittest

import torch
from parameterized import parameterized

from bundle.analysis import alignment_table, linear_cka, linear_probe, mean_cosine


def _orthonormal(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``(n, d)`` centred features with orthonormal columns."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return q


class TestLinearCKA(unittest.TestCase):
    @parameterized.expand(
        [
            ("identical", lambda x: x, 1.0),
            ("rotated_and_scaled", lambda x: 5.0 * x @ torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0], 1.0),
            ("shifted", lambda x: x + 3.0, 1.0),
        ]
    )
    def test_invariances(self, _, transform, expected):
        x = torch.randn(300, 6, dtype=torch.float64)
        self.assertAlmostEqual(linear_cka(x, transform(x)), expected, places=6)

    def test_half_shared_features_give_one_over_root_two(self):
        # y = [x, z] with z orthogonal to x and of the same spectrum: CKA = 1/sqrt(2)
        q = _orthonormal(400, 8)
        x, z = q[:, :4], q[:, 4:]
        self.assertAlmostEqual(linear_cka(x, torch.cat([x, z], dim=1)), 1 / math.sqrt(2), places=6)

    def test_orthogonal_features_give_zero(self):
        q = _orthonormal(400, 8)
        self.assertAlmostEqual(linear_cka(q[:, :4], q[:, 4:]), 0.0, places=6)

    def test_independent_noise_is_near_zero(self):
        g = torch.Generator().manual_seed(1)
        self.assertLess(linear_cka(torch.randn(5000, 4, generator=g), torch.randn(5000, 4, generator=g)), 0.01)

    def test_bad_shapes(self):
        with self.assertRaisesRegex(ValueError, "same n"):
            linear_cka(torch.randn(10, 3), torch.randn(9, 3))


class TestCosineAndProbe(unittest.TestCase):
    def test_cosine(self):
        x = torch.randn(50, 5)
        self.assertAlmostEqual(mean_cosine(x, 2 * x), 1.0, places=6)
        self.assertAlmostEqual(mean_cosine(x, -x), -1.0, places=6)

    def test_probe_separable_versus_chance(self):
        g = torch.Generator().manual_seed(0)
        target = torch.rand(2000, generator=g) > 0.7
        informative = torch.randn(2000, 4, generator=g) + 3.0 * target[:, None].float()
        self.assertGreater(linear_probe(informative, target), 0.95)
        self.assertLess(abs(linear_probe(torch.randn(2000, 4, generator=g), target) - 0.5), 0.06)
        self.assertTrue(math.isnan(linear_probe(torch.randn(20, 2), torch.zeros(20, dtype=torch.bool))))


class TestAlignmentTable(unittest.TestCase):
    def test_pairs_and_values(self):
        g = torch.Generator().manual_seed(0)
        voxels = 600
        regions = torch.zeros(voxels, 3, dtype=torch.bool)  # network order TC, WT, ET
        regions[:300, 1] = True
        regions[:150, 0] = True
        regions[:60, 2] = True
        teacher = torch.randn(voxels, 8, generator=g) + 2.0 * regions.float().repeat(1, 3)[:, :8]
        features = torch.stack(
            [
                teacher,
                teacher @ torch.linalg.qr(torch.randn(8, 8, generator=g))[0],
                torch.randn(voxels, 8, generator=g),
            ],
            dim=1,
        )  # flair = teacher, t1 = its rotation, t1ce = noise
        rows = alignment_table(
            features, regions, ["flair", "t1", "t1ce"], {"ET": "flair", "TC": "flair", "WT": "flair"}
        )
        by_student = {row["student"]: row for row in rows}
        self.assertEqual(sorted(by_student), ["t1", "t1ce"])
        self.assertEqual(by_student["t1"]["regions"], "ET+TC+WT")
        self.assertEqual(by_student["t1"]["voxels"], 300)
        self.assertAlmostEqual(by_student["t1"]["cka"], 1.0, places=5)
        self.assertLess(by_student["t1ce"]["cka"], 0.1)
        self.assertGreater(by_student["t1"]["probe_WT"], 0.9)
        self.assertLess(abs(by_student["t1ce"]["probe_WT"] - 0.5), 0.1)
