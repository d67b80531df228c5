"""Dice of a model under given modality combinations, case by case."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from monai.metrics import compute_dice
from torch import nn

__all__ = ["combination_dice"]


@torch.no_grad()
def combination_dice(
    network: nn.Module,
    data_loader: Iterable[dict],
    inferer: Callable,
    masks: torch.Tensor,
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
) -> torch.Tensor:
    """Per-case Dice of each region when the network sees only the sequences of each mask.

    A case that lacks a sequence of the mask is evaluated with the sequences it has of that mask;
    when it has none of them, its row is NaN. Regions empty in the ground truth give NaN (MONAI's
    ``ignore_empty``), so use ``nanmean`` to average.

    Args:
        network: model called as ``network(image, mask=mask)`` returning region logits.
        data_loader: yields batches with ``image (1, N, ...)``, ``label (1, R, ...)`` and ``mask (1, N)``.
        inferer: e.g. MONAI ``SlidingWindowInferer``; called as ``inferer(image, network, mask=mask)``.
        masks: bool ``(K, N)``, the combinations to evaluate.
        device: where to run.
        threshold: on the sigmoid probability.

    Returns:
        ``(cases, K, R)`` float tensor, regions in the network's channel order.

    Example:
        ``combination_dice(net, val_loader, SlidingWindowInferer((32, 32, 32)), torch.eye(4).bool())``
        gives the single-modality Dice used by the teacher election.
    """
    was_training = network.training
    network.eval()
    rows = []
    try:
        for batch in data_loader:
            image = batch["image"].to(device)
            label = batch["label"].to(device)
            case_mask = batch["mask"].to(device=device, dtype=torch.bool)
            if image.shape[0] != 1:
                raise ValueError(f"combination_dice needs a data loader with batch_size=1, got a batch of {image.shape[0]}.")
            row = torch.full((masks.shape[0], label.shape[1]), float("nan"))
            for index, combination in enumerate(masks.to(device)):
                mask = combination[None] & case_mask
                if not bool(mask.any()):
                    continue
                logits = inferer(image, network, mask=mask)
                pred = (torch.sigmoid(torch.as_tensor(logits)) > threshold).float()
                row[index] = compute_dice(pred, label, include_background=True, ignore_empty=True)[0].cpu()
            rows.append(row)
    finally:
        network.train(was_training)
    if not rows:
        raise ValueError("combination_dice got an empty data loader: the validation split has no case.")
    return torch.stack(rows)
