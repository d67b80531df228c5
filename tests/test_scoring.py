"""Scoring by named BraTS rule set, against values the official evaluations gave on hand-made label maps.

The reference values were computed once, outside this project, on the maps of ``tests/scoring_cases.py`` written as
NIfTI (BraTS 2023 labels, 1 mm voxels unless the case says otherwise), on 2026-12-03:

- ``OFFICIAL_2025``: ``brats-evaluation`` 0.0.10 (AGPL-3.0, installed in its own virtual environment, never
  imported here), ``Panoptica_Evaluator.load_from_config(config_path("gli"))`` with panoptica 2.1.7, then its
  ``evaluate`` on the two files: ``global_bin_dsc``, ``global_bin_hd95``, ``global_bin_nsd``, ``sq_dsc``,
  ``sq_hd95``, ``sq_nsd`` of the groups tc, wt, et. ``inf`` is what the package gives before its parser's 373.
- ``OFFICIAL_2023``: the BraTS 2023 lesion-wise script (github.com/rachitsaluja/BraTS-2023-Metrics, ``metrics.py``
  at commit 43c9052, ``get_LesionWiseResults(pred, gt, "BraTS-GLI")``; numpy 1.26, pandas 1.5.3, DeepMind's
  surface-distance 0.1): ``Legacy_Dice``, ``Legacy_HD95``, ``LesionWise_Score_Dice``, ``LesionWise_Score_HD95``.

Regions in network order: TC, WT, ET.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bundle.conventions import label_regions
from bundle.errors import InputError
from bundle.metrics.scoring import metric_names, score_label_maps
from tests.scoring_cases import hand_made_cases

INF, NAN = math.inf, math.nan

OFFICIAL_2025 = {
    "slab": {
        "dice": (0.923077, 0.965517, 0.941748),
        "hd95": (3.0, 6.0, 1.0),
        "nsd": (0.828819, 0.854214, 0.940292),
        "lesion_dice": (0.6, 0.636364, 0.615873),
        "lesion_hd95": (8.0, 16.0, 8.0),
        "lesion_nsd": (0.666667, 0.64411, 0.75),
    },
    "missed_lesion": {
        "dice": (0.994563, 0.999445, 0.991472),
        "hd95": (0.0, 0.0, 0.0),
        "nsd": (0.98566, 0.997046, 0.990887),
        "lesion_dice": (1.0, 1.0, 1.0),
        "lesion_hd95": (0.0, 0.0, 0.0),
        "lesion_nsd": (1.0, 1.0, 1.0),
    },
    "false_positive": {
        "dice": (1.0, 0.998816, 1.0),
        "hd95": (0.0, 0.0, 0.0),
        "nsd": (1.0, 0.994514, 1.0),
        "lesion_dice": (1.0, 1.0, 1.0),
        "lesion_hd95": (0.0, 0.0, 0.0),
        "lesion_nsd": (1.0, 1.0, 1.0),
    },
    "et_empty_in_truth": {
        "dice": (1.0, 1.0, 0.0),
        "hd95": (0.0, 0.0, INF),
        "nsd": (1.0, 1.0, 0.0),
        "lesion_dice": (1.0, 1.0, 0.0),
        "lesion_hd95": (0.0, 0.0, INF),
        "lesion_nsd": (1.0, 1.0, 0.0),
    },
    "et_empty_in_both": {
        "dice": (0.965517, 1.0, NAN),
        "hd95": (1.0, 0.0, NAN),
        "nsd": (0.837374, 1.0, NAN),
        "lesion_dice": (0.965517, 1.0, NAN),
        "lesion_hd95": (1.0, 0.0, NAN),
        "lesion_nsd": (1.0, 1.0, NAN),
    },
    "spacing_2mm": {
        "dice": (0.923077, 0.965517, 0.941748),
        "hd95": (3.0, 6.0, 1.0),
        "nsd": (0.828819, 0.854214, 0.940292),
        "lesion_dice": (0.6, 0.636364, 0.615873),
        "lesion_hd95": (16.0, 32.0, 16.0),
        "lesion_nsd": (0.666667, 0.64411, 0.75),
    },
}

OFFICIAL_2023 = {
    "slab": {
        "dice": (0.923077, 0.965517, 0.941748),
        "hd95": (4.0, 8.0, 1.0),
        "lesion_dice": (0.923077, 0.965517, 0.941748),
        "lesion_hd95": (4.0, 8.0, 1.0),
    },
    "missed_lesion": {
        "dice": (0.994563, 0.999445, 0.991472),
        "hd95": (0.0, 0.0, 0.0),
        "lesion_dice": (1.0, 1.0, 1.0),
        "lesion_hd95": (0.0, 0.0, 0.0),
    },
    "false_positive": {
        "dice": (1.0, 0.998816, 1.0),
        "hd95": (0.0, 0.0, 0.0),
        "lesion_dice": (1.0, 0.5, 1.0),
        "lesion_hd95": (0.0, 187.0, 0.0),
    },
    "et_empty_in_truth": {
        "dice": (1.0, 1.0, 0.0),
        "hd95": (0.0, 0.0, 374.0),
        "lesion_dice": (1.0, 1.0, 0.0),
        "lesion_hd95": (0.0, 0.0, 374.0),
    },
    "et_empty_in_both": {
        "dice": (0.965517, 1.0, 1.0),
        "hd95": (1.0, 0.0, 0.0),
        "lesion_dice": (0.965517, 1.0, 1.0),
        "lesion_hd95": (1.0, 0.0, 0.0),
    },
    "spacing_2mm": {
        "dice": (0.923077, 0.965517, 0.941748),
        "hd95": (8.0, 16.0, 2.0),
        "lesion_dice": (0.923077, 0.965517, 0.941748),
        "lesion_hd95": (8.0, 16.0, 2.0),
    },
}

CASES = hand_made_cases()


def _expected_2025(name: str, metric: str) -> list[float]:
    """The official value, where this project reports it differently on purpose: an infinite HD95 as the 373 mm the
    package's parser reports (it does so for the global HD95, and leaves the lesion-wise one infinite, which would
    make every mean over cases infinite), and the global HD95 in millimetres (the package measures it in voxels: its
    2 mm case gives the 1 mm values)."""
    values = [373.0 if value == INF else value for value in OFFICIAL_2025[name][metric]]
    if metric == "hd95":
        values = [value * CASES[name][2][0] for value in values]
    return values


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("metric", metric_names("brats2025"))
def test_brats2025_gives_the_official_packages_values(name, metric):
    truth, prediction, spacing = CASES[name]
    scores = score_label_maps(prediction, truth, spacing, convention="brats2023", rules="brats2025")
    np.testing.assert_allclose(scores[metric], _expected_2025(name, metric), atol=5e-7, equal_nan=True)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("metric", metric_names("brats2023"))
def test_brats2023_gives_the_2023_scripts_values(name, metric):
    truth, prediction, spacing = CASES[name]
    scores = score_label_maps(prediction, truth, spacing, convention="brats2023", rules="brats2023")
    np.testing.assert_allclose(scores[metric], OFFICIAL_2023[name][metric], atol=5e-7)


@pytest.mark.parametrize("convention, values", [("brats2021", (1, 2, 4)), ("msd", (2, 1, 3))])
def test_conventions_score_alike(convention, values):
    """The same maps in another dataset's label values score the same."""
    truth, prediction, spacing = CASES["slab"]
    recode = np.zeros(8, np.uint8)
    recode[[1, 2, 3]] = values
    expected = score_label_maps(prediction, truth, spacing, convention="brats2023")
    scores = score_label_maps(torch.as_tensor(recode[prediction])[None], recode[truth], spacing, convention=convention)
    for metric, value in expected.items():
        np.testing.assert_allclose(scores[metric], value)


def test_regions_rebuilt_as_brats_does():
    labels = np.array([0, 1, 2, 4, 3])  # 3 is no class in the 2018-2021 convention
    np.testing.assert_array_equal(
        label_regions(labels).astype(int), [[0, 1, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 0]]
    )


def test_without_lesion_wise_and_bad_arguments():
    truth, prediction, spacing = CASES["slab"]
    assert set(score_label_maps(prediction, truth, spacing, "brats2023", "brats2025", lesion_wise=False)) == {
        "dice",
        "hd95",
        "nsd",
    }
    with pytest.raises(InputError, match="scoring must be one of"):
        score_label_maps(prediction, truth, rules="brats2021")
    with pytest.raises(InputError, match="different grids"):
        score_label_maps(prediction[:-1], truth)
