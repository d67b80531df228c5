"""How much a student modality's bottleneck features share with its teacher's, inside the tumour.

The modality focusing hypothesis (Xue et al., ICLR 2023) says distillation helps a student only as
far as the features that decide the label are shared with the teacher. These diagnostics make that
visible per (student, teacher) pair: linear CKA and mean cosine similarity of their bottleneck
features on tumour voxels, and how well a linear probe on the student's features alone predicts
each region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bundle.conventions import NETWORK_REGIONS, REPORT_REGIONS
from bundle.errors import InputError

__all__ = ["linear_cka", "mean_cosine", "linear_probe", "bottleneck_samples", "alignment_table"]

PROBE_FILL = 0.25
"""A region is a probe's positive class in a bottleneck voxel it fills at least this fraction of."""


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al., 2019) of two sets of features of the same samples.

    1 for features equal up to rotation and isotropic scaling, near 0 for unrelated ones.

    Args:
        x: ``(n, d1)``, one row per sample (voxel).
        y: ``(n, d2)``, the same samples.

    Example:
        >>> x = torch.randn(500, 8)
        >>> round(linear_cka(x, 3 * x @ torch.linalg.qr(torch.randn(8, 8))[0]), 4)
        1.0
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise InputError(
            f"linear_cka needs (n, d) features of the same n >= 2 samples, got {list(x.shape)} and {list(y.shape)}."
        )
    x = (x - x.mean(0)).double()
    y = (y - y.mean(0)).double()
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over samples of the cosine similarity of ``x[i]`` and ``y[i]`` (``(n, d)`` each)."""
    if x.shape != y.shape or x.dim() != 2:
        raise InputError(f"mean_cosine needs two (n, d) tensors of one shape, got {list(x.shape)} and {list(y.shape)}.")
    return float(F.cosine_similarity(x.double(), y.double(), dim=1).mean())


def linear_probe(features: torch.Tensor, target: torch.Tensor, steps: int = 200, seed: int = 0) -> float:
    """Balanced accuracy of a logistic-regression probe, fit on half the samples and scored on the other half.

    0.5 is chance; 1.0 means the features separate the classes linearly.

    Args:
        features: ``(n, d)``.
        target: ``(n,)`` bool.
        steps: L-BFGS iterations.
        seed: of the random half split.

    Returns:
        Balanced accuracy on the held-out half, or NaN when a class is absent from either half.
    """
    target = target.bool()
    order = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(seed))
    train, test = order[::2], order[1::2]
    x = features.double()
    mean, std = x[train].mean(0), x[train].std(0).clamp(min=1e-6)
    x = (x - mean) / std
    for part in (train, test):
        if target[part].all() or not target[part].any():
            return float("nan")
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")
    positive = target[train].double().mean()
    sample_weight = torch.where(target[train], 0.5 / positive, 0.5 / (1 - positive))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x[train] @ weight + bias
        loss = F.binary_cross_entropy_with_logits(logits, target[train].double(), weight=sample_weight)
        loss = loss + 1e-4 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (x[test] @ weight + bias) > 0
    truth = target[test]
    return float(((predicted & truth).sum() / truth.sum() + (~predicted & ~truth).sum() / (~truth).sum()) / 2)


@torch.no_grad()
def bottleneck_samples(
    network: nn.Module, data_loader: Iterable[dict], device: torch.device | str = "cpu", max_voxels: int = 4000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence bottleneck features and region labels of the bottleneck voxels of every case.

    Only cases with every sequence present are used, each encoded whole (pad it to a multiple of the
    network's downsampling, as the evaluation transforms do); labels are downsampled by average
    pooling to the fraction of each bottleneck voxel a region fills.

    Args:
        network: an LCKDNet (anything with ``encode`` returning per-sequence features per level).
        data_loader: ``image (1, N, ...)``, ``label (1, R, ...)`` in network region order, ``mask (1, N)``.
        device: where to encode.
        max_voxels: at most this many voxels are kept (evenly spaced), to bound the probe's cost.

    Returns:
        ``features (V, N, C)`` and ``regions (V, R)``: the fraction in [0, 1] of each voxel a region
        fills, regions in network order (TC, WT, ET).
    """
    was_training = network.training
    network.eval()
    features, regions = [], []
    try:
        for batch in data_loader:
            if not bool(torch.as_tensor(batch["mask"]).all()):
                continue
            bottleneck = network.encode(torch.as_tensor(batch["image"]).to(device))[-1][0]  # (N, C, h, w, d)
            label = F.adaptive_avg_pool3d(torch.as_tensor(batch["label"]).float().to(device), bottleneck.shape[2:])[0]
            features.append(bottleneck.flatten(2).permute(2, 0, 1).cpu())  # (v, N, C)
            regions.append(label.flatten(1).T.cpu())  # (v, R)
    finally:
        network.train(was_training)
    if not features:
        raise InputError("no case with every sequence present to compare features on; add complete cases to the split.")
    all_features, all_regions = torch.cat(features), torch.cat(regions)
    if all_features.shape[0] > max_voxels:
        keep = torch.linspace(0, all_features.shape[0] - 1, max_voxels).long()
        all_features, all_regions = all_features[keep], all_regions[keep]
    return all_features, all_regions


def alignment_table(
    features: torch.Tensor, regions: torch.Tensor, modalities: Sequence[str], teachers: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per (student, teacher) pair: CKA and cosine on tumour voxels, and the student's probe accuracy.

    Tumour voxels are the bottleneck voxels the whole tumour touches; a probe's target is a region
    filling at least a quarter of a voxel (small regions such as ET rarely fill half of one).

    Args:
        features: ``(V, N, C)`` from :func:`bottleneck_samples`.
        regions: ``(V, R)`` region fractions (or bool), network region order.
        modalities: names of the N sequences.
        teachers: region -> teacher modality; every other modality is that teacher's student.

    Returns:
        Rows ``{"student", "teacher", "regions" (taught by this teacher), "voxels", "cka", "cosine",
        "probe_ET", "probe_TC", "probe_WT"}``; the probes are balanced accuracies on all voxels.
    """
    regions = regions.float()
    tumour = regions[:, NETWORK_REGIONS.index("WT")] > 0
    if int(tumour.sum()) < 2:
        raise InputError("fewer than 2 bottleneck voxels inside the tumour; use larger or more cases.")
    probes = {
        modality: {
            region: linear_probe(features[:, index], regions[:, NETWORK_REGIONS.index(region)] >= PROBE_FILL)
            for region in REPORT_REGIONS
        }
        for index, modality in enumerate(modalities)
    }
    rows = []
    for teacher in dict.fromkeys(teachers.values()):
        taught = [region for region in REPORT_REGIONS if teachers.get(region) == teacher]
        t = modalities.index(teacher)
        for s, student in enumerate(modalities):
            if s == t:
                continue
            x, y = features[tumour, s], features[tumour, t]
            rows.append(
                {
                    "student": student,
                    "teacher": teacher,
                    "regions": "+".join(taught),
                    "voxels": int(tumour.sum()),
                    "cka": linear_cka(x, y),
                    "cosine": mean_cosine(x, y),
                    **{f"probe_{region}": probes[student][region] for region in REPORT_REGIONS},
                }
            )
    return rows
