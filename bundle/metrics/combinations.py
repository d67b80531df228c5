"""Metrics of a model under given modality combinations, case by case, scored on the label maps inference writes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from monai.data import MetaTensor, decollate_batch
from monai.data.utils import affine_to_spacing
from torch import nn

from bundle.conventions import label_regions
from bundle.errors import InputError
from bundle.metrics.scoring import metric_names, score_label_maps

__all__ = ["case_combination_metrics", "combination_dice"]


@torch.no_grad()
def case_combination_metrics(
    network: nn.Module,
    batch: dict,
    inferer: Callable,
    masks: torch.Tensor,
    to_labels: Callable[[dict], Mapping],
    device: torch.device | str = "cpu",
    convention: str = "brats2021",
    scoring: str | None = None,
    lesion_wise: bool = True,
    hd95: bool = True,
    amp: bool = False,
    ignore_empty: bool = False,
) -> dict[str, torch.Tensor]:
    """Scores of each region for one case under each modality combination, on the label maps inference writes.

    Each combination's output goes through ``to_labels`` (:class:`bundle.transforms.PredictionToLabelsd`: back to
    the grid the case was read on, threshold, post-processing, label map), and is scored against the case's label
    file as read, with the regions rebuilt from both maps as BraTS rebuilds them. A case that lacks a sequence of a
    combination is evaluated with the sequences it has of that combination; when it has none of them, its row is NaN.

    Args:
        network: model called as ``inferer(image, network, mask=mask)``, returning region logits; in eval
            mode. With a ``forward_combinations`` method (LCKDNet) each window is encoded once for all
            combinations (identical results, about 4x faster for 15 combinations).
        batch: one case: ``image (1, N, ...)`` as preprocessed (with its applied transforms), ``label (1, 1, ...)``
            the label map as read from disk, and ``mask (1, N)``.
        inferer: e.g. :class:`bundle.networks.CaseMaskInferer`.
        masks: bool ``(K, N)``, the combinations.
        to_labels: maps ``{"image", "pred"}`` to the label map in ``pred``.
        device: where to run.
        convention: the label values of both maps.
        scoring: a rule set of :data:`bundle.metrics.scoring.SCORING_RULES`; ``None`` gives the Dice of the rebuilt
            regions only (1 when truth and prediction are empty), what the election and the model selection compare.
        lesion_wise: with ``scoring``, also the lesion-wise metrics.
        hd95: with ``scoring``, also the distance metrics (HD95; lesion-wise HD95).
        amp: run the network under ``torch.autocast`` (mixed precision; for GPUs).
        ignore_empty: NaN instead of a score for a region empty in the truth (the teacher election compares how
            well each sequence finds a region, which a case without it cannot tell).

    Returns:
        ``{metric: (K, R)}``, regions in network order: ``{"dice"}`` without ``scoring``, else
        :func:`bundle.metrics.scoring.metric_names`.
    """
    image = batch["image"].to(device)
    case_mask = batch["mask"].to(device=device, dtype=torch.bool)
    if image.shape[0] != 1:
        raise InputError(f"combination metrics need a data loader with batch_size=1, got a batch of {image.shape[0]}.")
    case = decollate_batch(batch, detach=True)[0]
    truth = case["label"]
    names = ["dice"] if scoring is None else list(metric_names(scoring, lesion_wise))
    if not hd95:
        names = [name for name in names if not name.endswith("hd95")]
    result = {name: torch.full((masks.shape[0], 3), float("nan")) for name in names}
    effective = masks.to(device=device, dtype=torch.bool) & case_mask
    runnable = effective.any(dim=1).cpu()
    truth_regions = label_regions(truth, convention)
    spacing = affine_to_spacing(truth.affine, r=3).tolist() if isinstance(truth, MetaTensor) else [1.0, 1.0, 1.0]
    if bool(runnable.any()):
        # combinations that reduce to the same present sequences for this case are run and scored once
        unique, which = torch.unique(effective[runnable.to(effective.device)], dim=0, return_inverse=True)
        with torch.autocast(device_type=image.device.type, enabled=amp):
            logits = _combination_logits(network, inferer, image, unique)
        scores = []
        for logit in logits:
            labels = to_labels({"image": case["image"], "pred": logit[0]})["pred"]
            if scoring is None:
                scores.append({"dice": _dice(label_regions(labels, convention), truth_regions)})
            else:
                scored = score_label_maps(labels, truth, spacing, convention, scoring, lesion_wise)
                scores.append({name: torch.as_tensor(scored[name], dtype=torch.float32) for name in names})
        for name in names:
            result[name][runnable] = torch.stack([score[name] for score in scores])[which.cpu()]
    if ignore_empty:
        empty_truth = torch.as_tensor(~truth_regions.reshape(3, -1).any(axis=1))
        for values in result.values():
            values[:, empty_truth] = float("nan")
    return result


def _dice(pred: np.ndarray, truth: np.ndarray) -> torch.Tensor:
    """Dice of each region ``(R, ...)``: 1 when both are empty, 0 when one is."""
    pred, truth = pred.reshape(len(pred), -1), truth.reshape(len(truth), -1)
    overlap = np.logical_and(pred, truth).sum(axis=1)
    total = pred.sum(axis=1) + truth.sum(axis=1)
    return torch.as_tensor(np.where(total > 0, 2.0 * overlap / np.maximum(total, 1), 1.0), dtype=torch.float32)


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
    to_labels: Callable[[dict], Mapping],
    device: torch.device | str = "cpu",
    convention: str = "brats2021",
    ignore_empty: bool = False,
) -> torch.Tensor:
    """Per-case Dice of each region under each combination of ``masks``, over a whole loader, on the label maps
    inference would write (:func:`case_combination_metrics` without a rule set).

    Under ``torch.distributed`` each process scores its shard of the loader (``DistributedSampler``)
    and every process gets all cases, so all of them reach the same result.

    Args:
        ignore_empty: NaN for a region empty in a case's truth instead of the BraTS rule (1 or 0).

    Returns:
        ``(cases, K, R)``; NaN where a case has no sequence of a combination (or, with ``ignore_empty``,
        no voxel of a region).

    Example:
        ``combination_dice(net, val_loader, inferer, torch.eye(4).bool(), to_labels)`` gives the single-modality Dice
        used by the teacher election.
    """
    was_training = network.training
    network.eval()
    try:
        rows = [
            case_combination_metrics(
                network, batch, inferer, masks, to_labels, device, convention, ignore_empty=ignore_empty
            )["dice"]
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
