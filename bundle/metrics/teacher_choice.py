"""Teacher election statistics: per region the sequence with the best single-modality Dice, ties, undecided
regions and bootstrap win rates."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bundle.conventions import NETWORK_REGIONS, REPORT_REGIONS, check_modalities
from bundle.errors import InputError, check_whole_number

__all__ = [
    "LOW_WIN_RATE",
    "MIN_SITE_CASES",
    "paired_cases",
    "elect_teachers",
    "undecided_regions",
    "bootstrap_win_rate",
    "site_election_summary",
    "combine_site_elections",
]

LOW_WIN_RATE = 0.7
"""Below this bootstrap win rate the elected teacher is reported as uncertain."""

MIN_SITE_CASES = 5
"""A federated site sends no election sum behind which fewer validation cases stand (so no case's score leaves it)."""


def _complete(dice: torch.Tensor) -> torch.Tensor:
    """``(cases, R)`` bool: the case has a score for every sequence in that region (all of them present, region too)."""
    return ~torch.isnan(dice).any(dim=1)


def paired_cases(dice: torch.Tensor) -> dict[str, int]:
    """Per region (report order), how many cases score every sequence: the cases an election compares on.

    Example:
        >>> paired_cases(torch.tensor([[[0.5, 0.9, 0.1], [0.4, float("nan"), 0.2]]]))  # 1 case, 2 sequences
        {'ET': 1, 'TC': 1, 'WT': 0}
    """
    complete = _complete(dice)
    return {region: int(complete[:, NETWORK_REGIONS.index(region)].sum()) for region in REPORT_REGIONS}


def _compared_means(dice: torch.Tensor) -> torch.Tensor:
    """``(N, R)`` mean Dice per sequence and region over the cases that have every sequence (paired); a region without
    such a case falls back to each sequence's mean over the cases that have it."""
    complete = _complete(dice)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a region no case holds: all-NaN mean
        available = torch.nanmean(dice.double(), dim=0)
        paired = torch.nanmean(torch.where(complete[:, None, :], dice.double(), torch.nan), dim=0)
    return torch.where(complete.any(dim=0)[None, :], paired, available)


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
    """Elect, per region, the modality with the best mean single-modality Dice, compared on the same cases.

    Per region the sequences are compared on the cases that have all of them (and the region): a sequence is never
    judged on cases another one lacks. A region without such a case (every validation case lacks some sequence)
    falls back to each sequence's mean over the cases that have it; :func:`paired_cases` says which regions did.
    A region that no case contains (every score NaN) cannot be decided: it keeps its ``previous`` teacher, or has
    none before the first election (the region is then absent from the teacher set).

    Args:
        dice: ``(cases, N, R)`` Dice of each case with only modality ``n`` present, regions in
            network order (TC, WT, ET); NaN where the case lacks the sequence or the region.
        modalities: the N modality names, in canonical order (ties go to the earlier one).
        previous: the teacher set in force, region -> modality; kept for undecided regions.

    Returns:
        ``(teachers, table)``: region -> modality, and region -> {modality: mean Dice or None}, in report
        order (ET, TC, WT). :func:`undecided_regions` of the table names the regions not decided.

    Example:
        >>> nan = float("nan")  # case 2 lacks t1ce: flair wins on the case that has both (0.9 > 0.85)
        >>> dice = torch.tensor([[[0.9, 0.9, 0.9], [0.85, 0.85, 0.85]], [[0.3, 0.3, 0.3], [nan, nan, nan]]])
        >>> elect_teachers(dice, ["flair", "t1ce"])[0]
        {'ET': 'flair', 'TC': 'flair', 'WT': 'flair'}
    """
    modalities = check_modalities(modalities)
    if dice.dim() != 3 or dice.shape[1] != len(modalities) or dice.shape[2] != len(NETWORK_REGIONS):
        raise InputError(
            f"dice must be (cases, {len(modalities)} modalities, {len(NETWORK_REGIONS)} regions), got {list(dice.shape)}."
        )
    return _elect(_compared_means(dice), modalities, previous)


def _elect(
    mean: torch.Tensor, modalities: Sequence[str], previous: Mapping[str, str] | None
) -> tuple[dict[str, str], dict[str, dict[str, float | None]]]:
    """Teachers and table from ``(N, R)`` mean Dice (NaN: no case behind the cell)."""
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
    """How often each modality wins the election when the cases it compared on are resampled with replacement.

    Args:
        dice: ``(cases, N, R)`` as for :func:`elect_teachers`.
        modalities: the N modality names.
        resamples: number of bootstrap resamples.
        seed: of the resampling, so the figure is reproducible.

    Returns:
        region -> {modality: fraction of resamples it wins}, in report order; regions no case holds are left out.
    """
    modalities = check_modalities(modalities)
    complete = _complete(dice)
    rng = np.random.default_rng(seed)
    rates = {}
    for region in REPORT_REGIONS:
        index = NETWORK_REGIONS.index(region)
        rows = complete[:, index] if bool(complete[:, index].any()) else torch.ones(len(dice), dtype=torch.bool)
        values = dice[rows, :, index].double().numpy()  # (cases compared, N)
        if values.size == 0 or np.isnan(values).all():
            continue  # no case holds the region: nothing to resample
        picks = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample may hold no case with a modality
            means = np.nanmean(values[picks], axis=1)  # (resamples, N)
        wins = np.bincount([_argmax_first(row.tolist()) for row in means], minlength=len(modalities))
        rates[region] = {m: round(float(w) / resamples, 4) for m, w in zip(modalities, wins)}
    return rates


def _suppressed(sums: torch.Tensor, counts: torch.Tensor, min_cases: int) -> tuple[list, list]:
    """Sums and counts with every cell of fewer than ``min_cases`` cases zeroed (not sent)."""
    keep = counts >= min_cases
    return torch.where(keep, sums, torch.zeros_like(sums)).double().tolist(), torch.where(keep, counts, 0).tolist()


def site_election_summary(dice: torch.Tensor, min_cases: int = MIN_SITE_CASES) -> dict[str, Any]:
    """What one site of a federated election shares: per modality and region, sums of its cases' single-modality Dice
    and how many cases stand behind each, over the cases that have the sequence (``dice_sum``, ``cases``) and over
    the cases that have every sequence (``paired_dice_sum``, ``paired_cases``, what the election compares on). A sum
    of fewer than ``min_cases`` cases is not sent (zero, with zero cases), so no case's score leaves the site.

    Args:
        dice: ``(cases, N, R)`` as for :func:`elect_teachers`.
        min_cases: the fewest cases a sent sum may stand for (1 sends every sum).

    Returns:
        ``{"dice_sum": (N, R), "cases": (N, R), "paired_dice_sum": (N, R), "paired_cases": (R,),
        "validation_cases": int}`` as nested lists, regions in network order.

    Example:
        >>> site_election_summary(torch.tensor([[[0.5, 0.9, float("nan")]], [[0.7, 0.8, 0.6]]]), min_cases=1)["cases"]
        [[2, 2, 1]]
    """
    if dice.dim() != 3 or dice.shape[2] != len(NETWORK_REGIONS):
        raise InputError(f"dice must be (cases, modalities, {len(NETWORK_REGIONS)} regions), got {list(dice.shape)}.")
    check_whole_number("min_cases", min_cases, 1)
    present = ~torch.isnan(dice)
    complete = _complete(dice)
    dice_sum, cases = _suppressed(torch.where(present, dice, 0.0).sum(0), present.sum(0), min_cases)
    paired = torch.where(complete[:, None, :], dice, 0.0).sum(0)
    paired_counts = complete.sum(0)
    paired_sum, _ = _suppressed(paired, paired_counts[None].expand_as(paired), min_cases)
    return {
        "dice_sum": dice_sum,
        "cases": cases,
        "paired_dice_sum": paired_sum,
        "paired_cases": torch.where(paired_counts >= min_cases, paired_counts, 0).tolist(),
        "validation_cases": int(dice.shape[0]),
    }


def combine_site_elections(
    summaries: Mapping[str, Mapping[str, Any]], modalities: Sequence[str], previous: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, dict[str, float | None]], dict[str, dict[str, dict[str, int]]]]:
    """Elect the teachers from the sites' :func:`site_election_summary`: case-weighted mean Dice over the sites,
    compared as :func:`elect_teachers` compares, on the cases that have every sequence (their ``paired`` sums).

    A region for which no site sent paired sums (no site has enough cases with every sequence) falls back to each
    sequence's sums over the cases that have it: a site that lacks a sequence adds nothing to that cell. A cell no
    site has cases for is ``None``; a region no site's validation cases hold keeps its ``previous`` teacher; ties go
    to the earlier modality.

    Args:
        summaries: site name -> its summary.
        modalities: the N modality names, in canonical order.
        previous: the teacher set in force.

    Returns:
        ``(teachers, table, cases)``: region -> modality; region -> {modality: combined mean Dice or None};
        region -> {modality: {site: cases, ..., "total": cases, "paired": bool}}: the cases behind each compared
        mean, regions in report order.
    """
    modalities = check_modalities(modalities)
    shape = (len(modalities), len(NETWORK_REGIONS))
    totals = {kind: torch.zeros(shape, dtype=torch.float64) for kind in ("available", "paired")}
    counts = {kind: torch.zeros(shape, dtype=torch.float64) for kind in ("available", "paired")}
    per_site: dict[str, dict[str, torch.Tensor]] = {}
    for site, summary in summaries.items():
        sums = torch.as_tensor(summary["dice_sum"], dtype=torch.float64)
        cases = torch.as_tensor(summary["cases"], dtype=torch.float64)
        paired_sums = torch.as_tensor(summary.get("paired_dice_sum", torch.zeros(shape)), dtype=torch.float64)
        paired = torch.as_tensor(summary.get("paired_cases", [0] * shape[1]), dtype=torch.float64)
        if (
            sums.shape != shape
            or cases.shape != shape
            or paired_sums.shape != shape
            or paired.shape != shape[1:]
            or bool((cases < 0).any())
            or bool((paired < 0).any())
        ):
            raise InputError(
                f"site {site!r} sent an election summary of shape {list(sums.shape)} / {list(cases.shape)}; expected "
                f"{list(shape)} (modalities {list(modalities)} x regions {list(NETWORK_REGIONS)}) with case counts >= 0."
            )
        paired = paired[None].expand(shape)
        totals["available"] += sums
        counts["available"] += cases
        totals["paired"] += paired_sums
        counts["paired"] += paired
        per_site[site] = {"available": cases, "paired": paired}
    use_paired = (counts["paired"] > 0).all(dim=0)  # per region
    kind_of = ["paired" if bool(flag) else "available" for flag in use_paired]
    total = torch.stack([totals[kind_of[r]][:, r] for r in range(shape[1])], dim=1)
    count = torch.stack([counts[kind_of[r]][:, r] for r in range(shape[1])], dim=1)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full(shape, float("nan"), dtype=torch.float64))
    teachers, table = _elect(mean, modalities, previous)
    cases_table = {}
    for region in REPORT_REGIONS:
        r = NETWORK_REGIONS.index(region)
        cases_table[region] = {
            m: {
                **{site: int(c[kind_of[r]][n, r]) for site, c in per_site.items()},
                "total": int(count[n, r]),
                "paired": kind_of[r] == "paired",
            }
            for n, m in enumerate(modalities)
        }
    return teachers, table, cases_table
