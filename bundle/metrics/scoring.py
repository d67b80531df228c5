"""Scoring label maps as the BraTS challenges score them, by named rule set.

What is scored is a label map (what inference writes), with the regions rebuilt from it as BraTS rebuilds them:
TC = NCR + ET, WT = NCR + ED + ET, ET. Two rule sets:

- ``"brats2025"``: the official package ``brats-evaluation`` (glioma configuration), through ``panoptica``
  configured as that package configures it: connected components, maximum bipartite matching of lesions on
  Dice > 1e-6, global Dice, NSD and HD95 per region, lesion-wise Dice, NSD and HD95 as the mean over matched
  lesions (a region without any true or predicted lesion: NaN, which the package's means skip; no matched lesion:
  Dice and NSD 0). The package is AGPL-3.0 and is never imported here: the tests hold values it gave.
- ``"brats2023"``: the BraTS 2023 lesion-wise rules: truth lesions dilated 3 times (18-connectivity) and merged
  when their dilations touch, true lesions of at most 50 mm³ left out, a predicted lesion (26-connected) matched
  to every true lesion whose dilation it touches, Dice 0 and HD95 374 per missed or false-positive lesion; the
  legacy Dice (1 when both are empty) and HD95 (the 95th percentile of surface distances weighted by surface
  element area, as DeepMind's ``surface-distance`` that the 2023 script uses, from MONAI's sub-voxel mask edges; 0
  when both are empty, 374 when one is).

HD95 is in millimetres from the voxel spacing. The official package computes its global HD95 and NSD in voxels (it
gives the same global values for 1 mm and 2 mm voxels) and its lesion-wise HD95 in millimetres; on BraTS's 1 mm
grid the two agree.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.utils import get_mask_edges, get_surface_distance
from panoptica import (
    ConnectedComponentsInstanceApproximator,
    InputType,
    MaxBipartiteMatching,
    Metric,
    Panoptica_Evaluator,
)
from panoptica.utils.citation_reminder import disable_citation_reminder
from panoptica.utils.edge_case_handling import EdgeCaseHandler, EdgeCaseResult, MetricZeroTPEdgeCaseHandling
from panoptica.utils.label_group import LabelGroup, LabelMergeGroup
from panoptica.utils.segmentation_class import SegmentationClassGroups
from scipy import ndimage

from bundle.conventions import LABEL_CONVENTIONS, NETWORK_REGIONS, REGION_CLASSES, label_regions
from bundle.errors import InputError, check_choice

__all__ = [
    "SCORING_RULES",
    "BRATS2025_HD95_PENALTY",
    "BRATS2023_HD95_PENALTY",
    "check_rules",
    "metric_names",
    "score_label_maps",
    "binary_dice",
]

SCORING_RULES: dict[str, str] = {
    "brats2025": "BraTS 2025 (the official brats-evaluation package, glioma rules)",
    "brats2023": "BraTS 2023 lesion-wise rules",
}
"""Rule-set name -> how reports name it."""

BRATS2025_HD95_PENALTY = 373.0
"""HD95 (mm) the official package reports for a region present in only one of truth and prediction."""

BRATS2023_HD95_PENALTY = 374.0
"""HD95 (mm) of the BraTS 2023 rules for an unmatched lesion, or a region present in only one map."""

_METRICS = {
    "brats2025": ("dice", "hd95", "nsd", "lesion_dice", "lesion_hd95", "lesion_nsd"),
    "brats2023": ("dice", "hd95", "lesion_dice", "lesion_hd95"),
}
_DILATION = ndimage.generate_binary_structure(3, 2)  # 18-connectivity
_COMPONENTS = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity
_SMALL_LESION_MM3 = 50.0

disable_citation_reminder()  # its console banner would interrupt the evaluation's progress log


def check_rules(rules: str) -> str:
    """``rules`` if it names a rule set of :data:`SCORING_RULES`, else an :class:`InputError` listing them."""
    return check_choice("scoring", rules, list(SCORING_RULES))


def metric_names(rules: str = "brats2025", lesion_wise: bool = True) -> tuple[str, ...]:
    """The metrics :func:`score_label_maps` returns under ``rules``, legacy ones first.

    Example:
        >>> metric_names("brats2023")
        ('dice', 'hd95', 'lesion_dice', 'lesion_hd95')
    """
    names = _METRICS[check_rules(rules)]
    return names if lesion_wise else tuple(name for name in names if not name.startswith("lesion_"))


def score_label_maps(
    prediction: np.ndarray | torch.Tensor,
    truth: np.ndarray | torch.Tensor,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    convention: str = "brats2021",
    rules: str = "brats2025",
    lesion_wise: bool = True,
) -> dict[str, np.ndarray]:
    """Score a predicted label map against the truth under a named BraTS rule set.

    Args:
        prediction: label map ``(H, W, D)`` (or ``(1, H, W, D)``) in ``convention``'s values.
        truth: the reference, same grid and convention.
        spacing: voxel size in mm, for HD95 and lesion volumes.
        convention: label values of both maps.
        rules: a key of :data:`SCORING_RULES`.
        lesion_wise: also the lesion-wise metrics.

    Returns:
        ``{metric: (3,) float64}`` in network region order (TC, WT, ET), metrics :func:`metric_names`.

    Example:
        >>> truth = np.zeros((16, 16, 16), np.uint8); truth[4:12, 4:12, 4:12] = 2; truth[6:10, 6:10, 6:10] = 4
        >>> scores = score_label_maps(truth, truth, rules="brats2023")
        >>> scores["dice"].tolist(), scores["lesion_hd95"].tolist()
        ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """
    rules = check_rules(rules)
    pred_regions, true_regions = label_regions(prediction, convention), label_regions(truth, convention)
    if pred_regions.shape != true_regions.shape:
        raise InputError(
            f"prediction {list(pred_regions.shape[1:])} and truth {list(true_regions.shape[1:])} are on different "
            "grids; score a label map on the grid of its reference."
        )
    spacing = tuple(float(s) for s in spacing)
    names = metric_names(rules, lesion_wise)
    scores = {name: np.full(len(NETWORK_REGIONS), math.nan) for name in names}
    if rules == "brats2025":
        official = _panoptica_scores(pred_regions, true_regions, spacing)
        for index, (pred, true) in enumerate(zip(pred_regions, true_regions)):
            if not pred.any() and not true.any():
                continue  # the package's NaN: the region is left out of its means
            scores["dice"][index] = binary_dice(pred, true)
            scores["hd95"][index] = _pooled_hd95(pred, true, spacing)
            for name, value in official[NETWORK_REGIONS[index]].items():
                if name in scores:
                    scores[name][index] = value
    else:
        for index, (pred, true) in enumerate(zip(pred_regions, true_regions)):
            scores["dice"][index] = 1.0 if not pred.any() and not true.any() else binary_dice(pred, true)
            scores["hd95"][index] = _robust_hd95(pred, true, spacing)
            if lesion_wise:
                scores["lesion_dice"][index], scores["lesion_hd95"][index] = _brats2023_lesions(pred, true, spacing)
    return scores


def binary_dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty.

    Example:
        >>> binary_dice(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
        0.6666666666666666
    """
    total = int(pred.sum()) + int(true.sum())
    return 2.0 * int(np.logical_and(pred, true).sum()) / total if total else 1.0


def _pooled_hd95(pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...]) -> float:
    """panoptica's HD95 (both directions' surface distances pooled) in mm; one empty side: the package's 373."""
    if not pred.any() or not true.any():
        return BRATS2025_HD95_PENALTY
    return float(Metric.HD95(true, pred, voxelspacing=np.asarray(spacing, dtype=np.float64)))


def _robust_hd95(pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...]) -> float:
    """The BraTS 2023 HD95: the larger of the two directed 95th percentiles of surface distances, each weighted by
    its surface elements' areas; 0 for two empty maps, 374 when one is empty."""
    if not pred.any() and not true.any():
        return 0.0
    if not pred.any() or not true.any():
        return BRATS2023_HD95_PENALTY
    pred_edges, true_edges, pred_areas, true_areas = get_mask_edges(pred, true, crop=True, spacing=spacing)
    percentiles = []
    for edges, areas, other in ((true_edges, true_areas, pred_edges), (pred_edges, pred_areas, true_edges)):
        distances = get_surface_distance(edges, other, distance_metric="euclidean", spacing=spacing)
        order = np.argsort(distances, kind="stable")
        cumulative = np.cumsum(areas[edges][order]) / areas[edges].sum()
        percentiles.append(float(distances[order][min(np.searchsorted(cumulative, 0.95), len(order) - 1)]))
    return max(percentiles)


def _brats2023_lesions(pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """Lesion-wise Dice and HD95 of one region under the BraTS 2023 rules (see the module docstring)."""
    true_lesions, count = _merged_lesions(true)
    pred_components, _ = ndimage.label(pred, structure=_COMPONENTS)
    voxel_mm3 = float(np.prod(spacing))
    matched: set[int] = set()
    dice, hd95 = [], []
    for lesion in range(1, count + 1):
        lesion_mask = true_lesions == lesion
        reach = ndimage.binary_dilation(lesion_mask, structure=_DILATION, iterations=3)
        touching = np.unique(pred_components[reach])
        touching = touching[touching != 0]
        matched.update(int(c) for c in touching)
        if lesion_mask.sum() * voxel_mm3 <= _SMALL_LESION_MM3:
            continue  # too small to be scored; predictions touching it are not false positives either
        predicted = np.isin(pred_components, touching) if touching.size else np.zeros_like(pred)
        dice.append(binary_dice(predicted, lesion_mask) if touching.size else 0.0)
        hd95.append(_robust_hd95(predicted, lesion_mask, spacing) if touching.size else BRATS2023_HD95_PENALTY)
    false_positives = len(set(np.unique(pred_components).tolist()) - matched - {0})
    lesions = len(dice) + false_positives
    if lesions == 0:
        return 1.0, 0.0
    return sum(dice) / lesions, (sum(hd95) + false_positives * BRATS2023_HD95_PENALTY) / lesions


def _merged_lesions(true: np.ndarray) -> tuple[np.ndarray, int]:
    """True lesions: the truth's voxels grouped by the connected component of the dilated truth they lie in."""
    dilated = ndimage.binary_dilation(true, structure=_DILATION, iterations=3)
    groups, count = ndimage.label(dilated, structure=_COMPONENTS)
    return np.where(true, groups, 0), count


def _panoptica_evaluator() -> Panoptica_Evaluator:
    """panoptica configured as the official package's glioma configuration, for the three BraTS regions."""
    zero_tp = {
        Metric.DSC: (EdgeCaseResult.ZERO, EdgeCaseResult.ZERO),
        Metric.NSD: (EdgeCaseResult.ZERO, EdgeCaseResult.ZERO),
        Metric.HD95: (EdgeCaseResult.INF, EdgeCaseResult.INF),
    }
    handler = EdgeCaseHandler(
        {
            metric: MetricZeroTPEdgeCaseHandling(
                empty_prediction_result=empty,
                empty_reference_result=empty,
                no_instances_result=EdgeCaseResult.NAN,
                normal=normal,
            )
            for metric, (empty, normal) in zero_tp.items()
        },
        empty_list_std=EdgeCaseResult.NAN,
    )
    brats2023 = LABEL_CONVENTIONS["brats2023"]
    groups = {
        region.lower(): (LabelGroup if len(classes) == 1 else LabelMergeGroup)([brats2023[c] for c in classes])
        for region, classes in REGION_CLASSES.items()
    }
    with contextlib.redirect_stdout(io.StringIO()):  # panoptica prints a notice for labels shared by two groups
        merged = SegmentationClassGroups(groups)
    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=MaxBipartiteMatching(matching_metric=Metric.DSC, matching_threshold=1e-6),
        edge_case_handler=handler,
        segmentation_class_groups=merged,
        instance_metrics=[Metric.DSC, Metric.NSD, Metric.HD95],
        global_metrics=[Metric.DSC, Metric.NSD, Metric.HD95],
    )


_EVALUATOR: Panoptica_Evaluator | None = None


def _panoptica_scores(
    pred_regions: np.ndarray, true_regions: np.ndarray, spacing: tuple[float, ...]
) -> dict[str, dict[str, float]]:
    """Region -> the official package's lesion-wise metrics (and its global NSD), ∞ HD95 as 373."""
    global _EVALUATOR
    if _EVALUATOR is None:
        _EVALUATOR = _panoptica_evaluator()
    brats2023 = LABEL_CONVENTIONS["brats2023"]
    maps = []
    for regions in (pred_regions, true_regions):
        tc, wt, et = (regions[NETWORK_REGIONS.index(r)] for r in ("TC", "WT", "ET"))
        labels = np.zeros(tc.shape, np.uint8)
        labels[wt] = brats2023["ED"]
        labels[tc] = brats2023["NCR"]
        labels[et] = brats2023["ET"]
        maps.append(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # panoptica's note that NSD uses its default threshold
        results = _EVALUATOR.evaluate(maps[0], maps[1], voxelspacing=spacing)
    scores = {}
    for region in NETWORK_REGIONS:
        result = results[region.lower()]
        hd95 = float(result.sq_hd95)
        scores[region] = {
            "nsd": float(result.global_bin_nsd),
            "lesion_dice": float(result.sq_dsc),
            "lesion_hd95": BRATS2025_HD95_PENALTY if math.isinf(hd95) else hd95,
            "lesion_nsd": float(result.sq_nsd),
        }
    return scores
