"""Modality names, region names and the fixed order of the 15 modality combinations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch

from bundle.errors import InputError

__all__ = [
    "DEFAULT_MODALITIES",
    "NETWORK_REGIONS",
    "REPORT_REGIONS",
    "check_modalities",
    "check_teachers",
    "modality_combinations",
    "combination_masks",
    "combination_name",
]

DEFAULT_MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
"""Canonical order of the MRI sequences; the network's input channels follow it."""

NETWORK_REGIONS: tuple[str, ...] = ("TC", "WT", "ET")
"""Output channel order, as made by MONAI's ``ConvertToMultiChannelBasedOnBratsClassesd``."""

REPORT_REGIONS: tuple[str, ...] = ("ET", "TC", "WT")
"""Order in which reports and tables name the regions."""


def check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of modality names and return it as a tuple.

    Args:
        modalities: sequence names, e.g. ``["flair", "t1", "t1ce", "t2"]``.

    Returns:
        The names as a tuple, order kept.

    Raises:
        ValueError: when the list is empty, holds a non-string, an empty name or a duplicate.
    """
    if isinstance(modalities, str) or not isinstance(modalities, Sequence):
        raise InputError(f"modalities must be a list of names such as {list(DEFAULT_MODALITIES)}, got {modalities!r}.")
    names = tuple(modalities)
    if not names:
        raise InputError(
            f"modalities must name at least one sequence, got an empty list; e.g. {list(DEFAULT_MODALITIES)}."
        )
    for name in names:
        if not isinstance(name, str) or not name:
            raise InputError(f"every modality must be a non-empty string, got {name!r} in {list(names)}.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"modalities must be unique, got {list(names)} with duplicate {duplicates}.")
    return names


def check_teachers(teachers: Mapping[str, str], modalities: Sequence[str]) -> dict[str, str]:
    """Validate a teacher set (region -> modality) against the regions and a model's modalities.

    Returns:
        The teacher set as a dict.

    Raises:
        InputError: naming the entries whose region is not ET/TC/WT or whose modality the model lacks.

    Example:
        >>> check_teachers({"ET": "t1ce", "TC": "t1ce", "WT": "flair"}, DEFAULT_MODALITIES)
        {'ET': 't1ce', 'TC': 't1ce', 'WT': 'flair'}
    """
    wrong = {region: m for region, m in teachers.items() if region not in REPORT_REGIONS or m not in modalities}
    if wrong:
        raise InputError(
            f"teachers {dict(teachers)} name {wrong}: regions must be in {list(REPORT_REGIONS)} and "
            f"modalities in {list(modalities)}."
        )
    return dict(teachers)


def modality_combinations(modalities: Sequence[str] = DEFAULT_MODALITIES) -> list[tuple[str, ...]]:
    """All non-empty subsets of ``modalities``: by size, then lexicographic in the given order.

    Example:
        >>> modality_combinations(["flair", "t1", "t1ce", "t2"])[:5]
        [('flair',), ('t1',), ('t1ce',), ('t2',), ('flair', 't1')]

    Returns:
        ``2**N - 1`` tuples (15 for the four BraTS sequences).
    """
    names = check_modalities(modalities)
    return [combo for size in range(1, len(names) + 1) for combo in combinations(names, size)]


def combination_masks(modalities: Sequence[str] = DEFAULT_MODALITIES) -> torch.Tensor:
    """Boolean masks of :func:`modality_combinations`, shape ``(2**N - 1, N)``."""
    names = check_modalities(modalities)
    combos = modality_combinations(names)
    return torch.tensor([[name in combo for name in names] for combo in combos], dtype=torch.bool)


def combination_name(combination: Sequence[str]) -> str:
    """Readable name of a combination, e.g. ``"flair+t1ce"``."""
    return "+".join(combination)
