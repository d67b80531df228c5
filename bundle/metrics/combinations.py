"""Metrics of a model under given modality combinations, case by case."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from monai.metrics import compute_dice
from panoptica import (
    ConnectedComponentsInstanceApproximator,
    InputType,
    Metric,
    NaiveThresholdMatching,
    Panoptica_Evaluator,
)
from panoptica.utils.citation_reminder import disable_citation_reminder
from panoptica.utils.edge_case_handling import EdgeCaseHandler, EdgeCaseResult, MetricZeroTPEdgeCaseHandling
from torch import nn

from bundle.errors import InputError

__all__ = [
    "BRATS_HD95_PENALTY",
    "LESION_HD95_PENALTY",
    "case_combination_metrics",
    "combination_dice",
    "region_scores",
    "lesion_scores",
]

BRATS_HD95_PENALTY = 373.13
"""HD95 (mm) the BraTS challenge gives a region present in only one of truth and prediction: the diagonal
of its 240 x 240 x 155 mm volume."""

LESION_HD95_PENALTY = 374.0
"""HD95 (mm) the BraTS 2023+ lesion-wise metrics give each missed or false-positive lesion."""

# the model card cites panoptica; its console banner would interrupt the evaluation's progress log
disable_citation_reminder()
_LESION_EVALUATOR = Panoptica_Evaluator(
    expected_input=InputType.SEMANTIC,
    instance_approximator=ConnectedComponentsInstanceApproximator(),
    instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=0.5),
    instance_metrics=[Metric.DSC, Metric.HD95],
    global_metrics=[Metric.DSC],
    # without a matched lesion the averages over matches are undefined; lesion_scores applies the penalties
    edge_case_handler=EdgeCaseHandler(
        {
            metric: MetricZeroTPEdgeCaseHandling(default_result=EdgeCaseResult.NAN)
            for metric in (Metric.DSC, Metric.HD95)
        }
    ),
)


@torch.no_grad()
def case_combination_metrics(
    network: nn.Module,
    batch: dict,
    inferer: Callable,
    masks: torch.Tensor,
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
    hd95_spacing: Sequence[float] | None = None,
    amp: bool = False,
    ignore_empty: bool = False,
    lesion_wise: bool = False,
    postprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Dice (and HD95) of each region for one case, under each modality combination.

    Scored as the BraTS challenge scores (:func:`region_scores`): a region empty in both the truth and
    the prediction gives Dice 1 and HD95 0; empty in exactly one of them, Dice 0 and HD95
    :data:`BRATS_HD95_PENALTY`. A case that lacks a sequence of a combination is evaluated with the
    sequences it has of that combination; when it has none of them, its row is NaN.

    Args:
        network: model called as ``inferer(image, network, mask=mask)``, returning region logits; in eval
            mode. With a ``forward_combinations`` method (LCKDNet) each window is encoded once for all
            combinations (identical results, about 4x faster for 15 combinations).
        batch: ``image (1, N, ...)``, ``label (1, R, ...)`` and ``mask (1, N)``.
        inferer: e.g. MONAI ``SlidingWindowInferer``.
        masks: bool ``(K, N)``, the combinations.
        device: where to run.
        threshold: on the sigmoid probability.
        hd95_spacing: voxel spacing; when given, HD95 is computed too (in the spacing's units).
        amp: run the network under ``torch.autocast`` (mixed precision; for GPUs).
        ignore_empty: NaN instead of the BraTS rule for a region empty in the truth (the teacher election
            compares how well each sequence finds a region, which a case without it cannot tell).
        lesion_wise: also the BraTS 2023+ lesion-wise Dice and HD95 (:func:`lesion_scores`; needs
            ``hd95_spacing``).
        postprocess: applied to each binary ``(R, ...)`` prediction before scoring, e.g.
            :func:`bundle.transforms.region_postprocessing`.

    Returns:
        ``{"dice": (K, R)}``; with ``hd95_spacing`` also ``"hd95"``, with ``lesion_wise`` also
        ``"lesion_dice"`` and ``"lesion_hd95"``, each ``(K, R)``; regions in network order.
    """
    image = batch["image"].to(device)
    label = batch["label"].to(device)
    case_mask = batch["mask"].to(device=device, dtype=torch.bool)
    if image.shape[0] != 1:
        raise InputError(f"combination metrics need a data loader with batch_size=1, got a batch of {image.shape[0]}.")
    names = ["dice"] + (["hd95"] if hd95_spacing is not None else [])
    if lesion_wise:
        if hd95_spacing is None:
            raise InputError("lesion-wise metrics need hd95_spacing (the voxel spacing in mm).")
        names += ["lesion_dice", "lesion_hd95"]
    result = {name: torch.full((masks.shape[0], label.shape[1]), float("nan")) for name in names}
    effective = masks.to(device=device, dtype=torch.bool) & case_mask
    runnable = effective.any(dim=1).cpu()
    if bool(runnable.any()):
        # combinations that reduce to the same present sequences for this case are run and scored once
        unique, which = torch.unique(effective[runnable.to(effective.device)], dim=0, return_inverse=True)
        with torch.autocast(device_type=image.device.type, enabled=amp):
            logits = _combination_logits(network, inferer, image, unique)
        scores = []
        for logit in logits:
            pred = torch.sigmoid(logit) > threshold
            if postprocess is not None:
                pred = torch.stack([torch.as_tensor(postprocess(p), device=pred.device) > 0 for p in pred])
            scored = region_scores(pred, label, hd95_spacing)
            scores.append(scored + (lesion_scores(pred, label, hd95_spacing) if lesion_wise else ()))
        for index, name in enumerate(names):
            result[name][runnable] = torch.stack([score[index] for score in scores])[which.cpu()]
        if ignore_empty:
            empty_truth = label[0].flatten(1).sum(1).cpu() == 0
            for values in result.values():
                values[:, empty_truth] = float("nan")
    return result


def region_scores(
    pred: torch.Tensor, label: torch.Tensor, hd95_spacing: Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Legacy BraTS Dice and HD95 of each region of one case.

    Dice is MONAI's ``compute_dice`` without ``ignore_empty``: 1 when truth and prediction are both
    empty, 0 when only one is. HD95 is the BraTS definition (the ``panoptica`` package's, which the BraTS
    evaluation uses): the 95th percentile of the surface distances of both directions pooled, not the
    larger of the two one-way percentiles (MONAI's ``compute_hausdorff_distance``); 0 when both are
    empty, :data:`BRATS_HD95_PENALTY` when only one is.

    Args:
        pred: binary prediction ``(1, R, H, W, D)``.
        label: binary truth ``(1, R, H, W, D)``.
        hd95_spacing: voxel spacing in mm; ``None`` skips HD95.

    Returns:
        Dice ``(R,)`` and HD95 ``(R,)`` (``None`` without a spacing).

    Example:
        >>> truth = torch.zeros(1, 1, 8, 8, 8, dtype=torch.bool)
        >>> [t.tolist() for t in region_scores(truth, truth, (1.0, 1.0, 1.0))]  # no tumour, none predicted
        [[1.0], [0.0]]
    """
    pred, label = pred.bool(), label.bool()
    dice = compute_dice(pred.float(), label.float(), include_background=True, ignore_empty=False)[0].cpu()
    if hd95_spacing is None:
        return dice, None
    hd95 = []
    for region in range(label.shape[1]):
        truth = label[0, region].cpu().numpy()
        predicted = pred[0, region].cpu().numpy()
        if not truth.any() or not predicted.any():
            hd95.append(0.0 if truth.any() == predicted.any() else BRATS_HD95_PENALTY)
        else:
            hd95.append(float(Metric.HD95(truth, predicted, voxelspacing=np.asarray(hd95_spacing, dtype=np.float64))))
    return dice, torch.tensor(hd95, dtype=torch.float32)


def lesion_scores(
    pred: torch.Tensor, label: torch.Tensor, spacing: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """BraTS 2023+ lesion-wise Dice and HD95 of each region of one case, from ``panoptica``'s lesion matching.

    Lesions are the connected components of truth and prediction, matched one to one at IoU >= 0.5 (the
    matching of panoptica's BraTS evaluator configuration). Each matched lesion contributes its Dice and
    HD95; each missed or false-positive lesion Dice 0 and HD95 :data:`LESION_HD95_PENALTY`:
    ``Dice = sum(matched Dice) / (TP + FN + FP)``, likewise HD95. No lesion in either: Dice 1, HD95 0.

    Args:
        pred: binary prediction ``(1, R, H, W, D)``.
        label: binary truth ``(1, R, H, W, D)``.
        spacing: voxel spacing in mm.

    Returns:
        Lesion-wise Dice ``(R,)`` and HD95 ``(R,)``.
    """
    dice, hd95 = [], []
    for region in range(label.shape[1]):
        truth = label[0, region].cpu().numpy().astype(np.uint8)
        predicted = pred[0, region].cpu().numpy().astype(np.uint8)
        result = _LESION_EVALUATOR.evaluate(predicted, truth, voxelspacing=tuple(float(s) for s in spacing))
        counts = next(iter(result.values()))
        lesions = counts.tp + counts.fp + counts.fn
        if lesions == 0:
            dice.append(1.0)
            hd95.append(0.0)
            continue
        matched_dice = counts.tp * counts.sq_dsc if counts.tp else 0.0
        matched_hd95 = counts.tp * counts.sq_hd95 if counts.tp else 0.0
        dice.append(matched_dice / lesions)
        hd95.append((matched_hd95 + (counts.fp + counts.fn) * LESION_HD95_PENALTY) / lesions)
    return torch.tensor(dice, dtype=torch.float32), torch.tensor(hd95, dtype=torch.float32)


def _combination_logits(network: nn.Module, inferer: Callable, image: torch.Tensor, masks: torch.Tensor) -> list:
    """Logits ``(1, R, ...)`` of ``image`` under each row of ``masks``.

    A network with ``forward_combinations`` (LCKDNet) encodes each sliding window once and decodes it
    per combination; any other network is run once per combination.
    """
    if hasattr(network, "forward_combinations"):
        stacked = torch.as_tensor(inferer(image, network.forward_combinations, masks=masks))
        return [logits.float() for logits in stacked.chunk(masks.shape[0], dim=1)]
    return [torch.as_tensor(inferer(image, network, mask=mask[None])).float() for mask in masks]


def combination_dice(
    network: nn.Module,
    data_loader: Iterable[dict],
    inferer: Callable,
    masks: torch.Tensor,
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
    ignore_empty: bool = False,
) -> torch.Tensor:
    """Per-case Dice of each region under each combination of ``masks``, over a whole loader.

    Under ``torch.distributed`` each process scores its shard of the loader (``DistributedSampler``)
    and every process gets all cases, so all of them reach the same result.

    Args:
        ignore_empty: NaN for a region empty in a case's truth instead of the BraTS rule (1 or 0).

    Returns:
        ``(cases, K, R)``; NaN where a case has no sequence of a combination (or, with ``ignore_empty``,
        no voxel of a region).

    Example:
        ``combination_dice(net, val_loader, SlidingWindowInferer((32, 32, 32)), torch.eye(4).bool())``
        gives the single-modality Dice used by the teacher election.
    """
    was_training = network.training
    network.eval()
    try:
        rows = [
            case_combination_metrics(network, batch, inferer, masks, device, threshold, ignore_empty=ignore_empty)[
                "dice"
            ]
            for batch in data_loader
        ]
    finally:
        network.train(was_training)
    rows = _gather_cases(rows)
    if not rows:
        raise InputError("got an empty data loader: the split to evaluate has no case.")
    return torch.stack(rows)


def _gather_cases(rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every process's rows, process by process, when ``torch.distributed`` is initialised; else ``rows``."""
    if not (dist.is_available() and dist.is_initialized()):
        return rows
    gathered: list[list[torch.Tensor] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rows)
    return [row for process_rows in gathered for row in process_rows or []]
