"""Metrics of a model under given modality combinations, case by case."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from monai.metrics import compute_dice, compute_hausdorff_distance
from torch import nn

from bundle.errors import InputError

__all__ = ["case_combination_metrics", "combination_dice"]


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
) -> dict[str, torch.Tensor]:
    """Dice (and HD95) of each region for one case, under each modality combination.

    A case that lacks a sequence of a combination is evaluated with the sequences it has of that
    combination; when it has none of them, its row is NaN. A region empty in the ground truth gives
    NaN (MONAI's ``ignore_empty``). HD95 of an empty prediction for a non-empty region is the
    volume's diagonal, the largest distance possible.

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

    Returns:
        ``{"dice": (K, R)}`` and, with ``hd95_spacing``, ``{"hd95": (K, R)}``; regions in network order.
    """
    image = batch["image"].to(device)
    label = batch["label"].to(device)
    case_mask = batch["mask"].to(device=device, dtype=torch.bool)
    if image.shape[0] != 1:
        raise InputError(f"combination metrics need a data loader with batch_size=1, got a batch of {image.shape[0]}.")
    regions = label.shape[1]
    dice = torch.full((masks.shape[0], regions), float("nan"))
    hd95 = torch.full((masks.shape[0], regions), float("nan"))
    effective = masks.to(device=device, dtype=torch.bool) & case_mask
    runnable = effective.any(dim=1).cpu()
    if bool(runnable.any()):
        # combinations that reduce to the same present sequences for this case are run and scored once
        unique, which = torch.unique(effective[runnable.to(effective.device)], dim=0, return_inverse=True)
        with torch.autocast(device_type=image.device.type, enabled=amp):
            logits = _combination_logits(network, inferer, image, unique)
        scores = [_region_scores(logit, label, threshold, hd95_spacing) for logit in logits]
        dice[runnable] = torch.stack([score[0] for score in scores])[which.cpu()]
        if hd95_spacing is not None:
            hd95[runnable] = torch.stack([score[1] for score in scores])[which.cpu()]
    result = {"dice": dice}
    if hd95_spacing is not None:
        result["hd95"] = hd95
    return result


def _region_scores(
    logits: torch.Tensor, label: torch.Tensor, threshold: float, hd95_spacing: Sequence[float] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Dice ``(R,)`` and, with a spacing, HD95 ``(R,)`` of one prediction; NaN for regions absent from ``label``."""
    pred = (torch.sigmoid(logits) > threshold).float()
    dice = compute_dice(pred, label, include_background=True, ignore_empty=True)[0].cpu()
    if hd95_spacing is None:
        return dice, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MONAI warns on every empty prediction or label
        distance = compute_hausdorff_distance(
            pred, label, include_background=True, percentile=95, spacing=list(hd95_spacing)
        )[0].cpu()
    diagonal = float(
        torch.linalg.vector_norm(torch.tensor(label.shape[2:], dtype=torch.float64) * torch.tensor(hd95_spacing))
    )
    empty_truth = label[0].flatten(1).sum(1).cpu() == 0
    return dice, torch.where(empty_truth, float("nan"), torch.nan_to_num(distance, nan=diagonal, posinf=diagonal))


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
) -> torch.Tensor:
    """Per-case Dice of each region under each combination of ``masks``, over a whole loader.

    Under ``torch.distributed`` each process scores its shard of the loader (``DistributedSampler``)
    and every process gets all cases, so all of them reach the same result.

    Returns:
        ``(cases, K, R)``; NaN where a case has no sequence of a combination or no voxel of a region.

    Example:
        ``combination_dice(net, val_loader, SlidingWindowInferer((32, 32, 32)), torch.eye(4).bool())``
        gives the single-modality Dice used by the teacher election.
    """
    was_training = network.training
    network.eval()
    try:
        rows = [
            case_combination_metrics(network, batch, inferer, masks, device, threshold)["dice"] for batch in data_loader
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
