"""Random modality dropping: the official LCKD schedule and the uniform one, counted over many draws."""

import unittest
from collections import Counter
from itertools import combinations

import numpy as np
import torch
from ignite.engine import Engine
from parameterized import parameterized

from bundle.handlers import ModalityDropping, draw_kept_sequences

ALL = torch.ones(2, 4, dtype=torch.bool)
DRAWS = 6000


def count(present: torch.Tensor, schedule: str, draws: int = DRAWS, seed: int = 0) -> Counter:
    rng = np.random.default_rng(seed)
    return Counter(tuple(row) for _ in range(draws) for row in draw_kept_sequences(present, schedule, rng).tolist())


class TestDrawKeptSequences(unittest.TestCase):
    def test_lckd_is_per_batch_sizes_one_to_three_uniform_never_all(self):
        rng = np.random.default_rng(0)
        sizes, subsets = Counter(), Counter()
        for _ in range(DRAWS):
            kept = draw_kept_sequences(ALL, "lckd", rng)
            self.assertTrue(torch.equal(kept[0], kept[1]))  # one draw for the whole batch
            sizes[int(kept[0].sum())] += 1
            subsets[tuple(kept[0].tolist())] += 1
        self.assertEqual(set(sizes), {1, 2, 3})  # the full set never occurs after the warm-up
        for size in (1, 2, 3):  # each size 1/3 of the batches (expected 2000, sd ~37)
            self.assertAlmostEqual(sizes[size] / DRAWS, 1 / 3, delta=0.03)
        self.assertEqual(len(subsets), 14)
        for size in (1, 2, 3):  # within a size, the subsets are equally likely: 1/(3 * C(4, size))
            for subset in combinations(range(4), size):
                key = tuple(i in subset for i in range(4))
                expected = DRAWS / (3 * len(list(combinations(range(4), size))))
                self.assertAlmostEqual(subsets[key] / expected, 1.0, delta=0.15, msg=key)

    def test_uniform15_is_per_sample_over_all_fifteen(self):
        counts = count(ALL, "uniform15", draws=3000)  # 6000 rows, expected 400 per subset
        self.assertEqual(len(counts), 15)
        self.assertGreater(min(counts.values()), 320)
        self.assertLess(max(counts.values()), 480)
        rng = np.random.default_rng(1)
        differ = sum(not torch.equal(*draw_kept_sequences(ALL, "uniform15", rng)) for _ in range(200))
        self.assertGreater(differ, 150)  # two samples of a batch draw independently (equal 1/15 of the time)

    @parameterized.expand([("lckd",), ("uniform15",), ("none",)])
    def test_only_present_sequences_are_kept_and_never_none(self, schedule):
        present = torch.tensor([[True, False, True, True], [False, True, False, False]])
        for row in count(present, schedule, draws=500):
            self.assertTrue(any(row))
        for kept in (draw_kept_sequences(present, schedule, np.random.default_rng(s)) for s in range(200)):
            self.assertFalse(bool((kept & ~present).any()))
            self.assertTrue(bool(kept[1, 1]))  # the second sample's only sequence

    def test_uniform15_on_three_present_sequences_gives_seven_subsets(self):
        counts = count(torch.tensor([[True, False, True, True]]), "uniform15", draws=1400)
        self.assertEqual(len(counts), 7)
        self.assertGreater(min(counts.values()), 140)  # expected 200

    def test_unknown_schedule_is_refused(self):
        with self.assertRaisesRegex(ValueError, r"dropping must be one of \['lckd', 'uniform15', 'none'\], got 'all'"):
            draw_kept_sequences(ALL, "all", np.random.default_rng(0))


class TestModalityDropping(unittest.TestCase):
    def _run(self, dropping: ModalityDropping, epochs: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        seen = []

        def step(engine, batch):
            seen.append((engine.state.epoch, batch["mask"].clone(), batch["image"].clone()))

        engine = Engine(step)
        dropping.attach(engine)
        batches = [{"image": torch.ones(2, 4, 2, 2, 2) + 0.5, "mask": ALL.clone()} for _ in range(20)]
        engine.run(batches, max_epochs=epochs)
        return seen

    def test_warm_up_keeps_everything_then_drops_per_batch(self):
        seen = self._run(ModalityDropping("lckd", warmup_epochs=2), epochs=4)
        for epoch, mask, image in seen:
            if epoch <= 2:
                self.assertTrue(bool(mask.all()))
            else:
                self.assertTrue(1 <= int(mask[0].sum()) <= 3)
            # dropped channels are exactly zero, kept ones untouched
            expected = mask[:, :, None, None, None].float() * 1.5
            self.assertTrue(torch.equal(image, expected.expand_as(image)))

    def test_draws_depend_on_the_iteration_so_a_resumed_run_repeats_them(self):
        first = [mask for _, mask, _ in self._run(ModalityDropping("uniform15", seed=5), epochs=2)]
        again = [mask for _, mask, _ in self._run(ModalityDropping("uniform15", seed=5), epochs=2)]
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(first, again)))
        self.assertGreater(len({tuple(m.flatten().tolist()) for m in first}), 10)

    @parameterized.expand(
        [
            ({"schedule": "random"}, "dropping must be one of"),
            ({"warmup_epochs": -1}, "warmup_epochs must be an int >= 0"),
            ({"warmup_epochs": 2.5}, "warmup_epochs must be an int >= 0"),
        ]
    )
    def test_bad_options(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            ModalityDropping(**kwargs)


if __name__ == "__main__":
    unittest.main()
