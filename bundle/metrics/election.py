"""Teacher election statistics: per region the sequence with the best single-modality Dice, ties, undecided
regions and bootstrap win rates."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from bundle.conventions import NETWORK_REGIONS, REPORT_REGIONS, check_modalities
from bundle.errors import InputError

__all__ = [
    "LOW_WIN_RATE",
    "elect_teachers",
    "undecided_regions",
    "bootstrap_win_rate",
    "site_election_summary",
    "combine_site_elections",
]

LOW_WIN_RATE = 0.7
"""Below this bootstrap win rate the elected teacher is reported as uncertain."""


def _argmax_first(scores: Sequence[float]) -> int:
    """Index of the highest score, the first one on ties; NaN never wins."""
    best = 0
    for index, score in enumerate(scores):
        if not math.isnan(score) and (math.isnan(scores[best]) or score > scores[best]):
            best = index
    return best


def elect_teachers(
    dice: torch.Tensor, modalities: Sequence[str], previous: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, dict[str, float | None]]]:
    """Elect, per region, the modality with the best mean single-modality Dice.

    A region that no case contains (every score NaN) cannot be decided: it keeps its ``previous``
    teacher, or has none before the first election (the region is then absent from the teacher set).

    Args:
        dice: ``(cases, N, R)`` Dice of each case with only modality ``n`` present, regions in
            network order (TC, WT, ET); NaN entries are skipped.
        modalities: the N modality names, in canonical order (ties go to the earlier one).
        previous: the teacher set in force, region -> modality; kept for undecided regions.

    Returns:
        ``(teachers, table)``: region -> modality, and region -> {modality: mean Dice or None}, in report
        order (ET, TC, WT). :func:`undecided_regions` of the table names the regions not decided.

    Example:
        >>> dice = torch.tensor([[[0.1, 0.9, 0.2], [0.8, 0.3, 0.7]]])  # 1 case, 2 modalities
        >>> elect_teachers(dice, ["flair", "t1ce"])[0]
        {'ET': 't1ce', 'TC': 't1ce', 'WT': 'flair'}
    """
    modalities = check_modalities(modalities)
    if dice.dim() != 3 or dice.shape[1] != len(modalities) or dice.shape[2] != len(NETWORK_REGIONS):
        raise InputError(
            f"dice must be (cases, {len(modalities)} modalities, {len(NETWORK_REGIONS)} regions), got {list(dice.shape)}."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a region no case holds: all-NaN mean
        mean = torch.nanmean(dice.double(), dim=0)  # (N, R)
    teachers, table = {}, {}
    for region in REPORT_REGIONS:
        scores = mean[:, NETWORK_REGIONS.index(region)].tolist()
        table[region] = {m: round(s, 4) if not math.isnan(s) else None for m, s in zip(modalities, scores)}
        if all(math.isnan(score) for score in scores):
            if previous and region in previous:
                teachers[region] = previous[region]
            continue
        teachers[region] = modalities[_argmax_first(scores)]
    return teachers, table


def undecided_regions(table: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """Regions of an election table without any score: no validation case contains them."""
    return [region for region, scores in table.items() if all(score is None for score in scores.values())]


def bootstrap_win_rate(
    dice: torch.Tensor, modalities: Sequence[str], resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """How often each modality wins the election when the cases are resampled with replacement.

    Args:
        dice: ``(cases, N, R)`` as for :func:`elect_teachers`.
        modalities: the N modality names.
        resamples: number of bootstrap resamples.
        seed: of the resampling, so the figure is reproducible.

    Returns:
        region -> {modality: fraction of resamples it wins}, in report order; regions no case holds are left out.
    """
    modalities = check_modalities(modalities)
    values = dice.double().numpy()
    cases = values.shape[0]
    picks = np.random.default_rng(seed).integers(0, cases, size=(resamples, cases))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample may hold no case with a modality
        means = np.nanmean(values[picks], axis=1)  # (resamples, N, R)
    rates = {}
    for region in REPORT_REGIONS:
        column = means[:, :, NETWORK_REGIONS.index(region)]
        if np.isnan(column).all():
            continue  # no case holds the region: nothing to resample
        wins = np.bincount([_argmax_first(row.tolist()) for row in column], minlength=len(modalities))
        rates[region] = {m: round(float(w) / resamples, 4) for m, w in zip(modalities, wins)}
    return rates


def site_election_summary(dice: torch.Tensor) -> dict[str, list[list[float]]]:
    """What one site of a federated election shares: per modality and region, the sum of its cases' single-modality
    Dice and how many cases stand behind it (cases lacking the region or the sequence are NaN and not counted).
    No per-case score leaves the site.

    Args:
        dice: ``(cases, N, R)`` as for :func:`elect_teachers`.

    Returns:
        ``{"dice_sum": (N, R) nested lists, "cases": (N, R) nested lists, "validation_cases": int}``, regions
        in network order.

    Example:
        >>> site_election_summary(torch.tensor([[[0.5, 0.9, float("nan")]], [[0.7, 0.8, 0.6]]]))["cases"]
        [[2, 2, 1]]
    """
    if dice.dim() != 3 or dice.shape[2] != len(NETWORK_REGIONS):
        raise InputError(f"dice must be (cases, modalities, {len(NETWORK_REGIONS)} regions), got {list(dice.shape)}.")
    present = ~torch.isnan(dice)
    return {
        "dice_sum": torch.where(present, dice, torch.zeros_like(dice)).sum(0).double().tolist(),
        "cases": present.sum(0).tolist(),
        "validation_cases": int(dice.shape[0]),
    }


def combine_site_elections(
    summaries: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
    modalities: Sequence[str],
    previous: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, dict[str, float | None]], dict[str, dict[str, dict[str, int]]]]:
    """Elect the teachers from the sites' :func:`site_election_summary`: case-weighted mean Dice over the sites.

    A site that lacks a sequence entirely has no case behind it and adds nothing to that cell; a cell no site
    has cases for is ``None``; a region no site's validation cases hold keeps its ``previous`` teacher (as
    :func:`elect_teachers`); ties go to the earlier modality.

    Args:
        summaries: site name -> its summary.
        modalities: the N modality names, in canonical order.
        previous: the teacher set in force.

    Returns:
        ``(teachers, table, cases)``: region -> modality; region -> {modality: combined mean Dice or None};
        region -> {modality: {site: cases, ..., "total": cases}}, regions in report order.
    """
    modalities = check_modalities(modalities)
    shape = (len(modalities), len(NETWORK_REGIONS))
    total = torch.zeros(shape, dtype=torch.float64)
    counts = torch.zeros(shape, dtype=torch.float64)
    per_site = {}
    for site, summary in summaries.items():
        sums = torch.as_tensor(summary["dice_sum"], dtype=torch.float64)
        cases = torch.as_tensor(summary["cases"], dtype=torch.float64)
        if sums.shape != shape or cases.shape != shape or bool((cases < 0).any()):
            raise InputError(
                f"site {site!r} sent an election summary of shape {list(sums.shape)} / {list(cases.shape)}; expected "
                f"{list(shape)} (modalities {list(modalities)} x regions {list(NETWORK_REGIONS)}) with case counts >= 0."
            )
        total += sums
        counts += cases
        per_site[site] = cases
    mean = torch.where(counts > 0, total / counts.clamp(min=1), torch.full(shape, float("nan"), dtype=torch.float64))
    teachers, table = elect_teachers(mean[None], modalities, previous)
    cases_table = {
        region: {
            m: {**{site: int(c[n, NETWORK_REGIONS.index(region)]) for site, c in per_site.items()},
                "total": int(counts[n, NETWORK_REGIONS.index(region)])}
            for n, m in enumerate(modalities)
        }
        for region in REPORT_REGIONS
    }  # fmt: skip
    return teachers, table, cases_table
