"""The dataset conventions in one place: sequence names and their order, tumour regions, label values on disk,
dataset layouts, case names, and the fixed order of the 15 modality combinations."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from bundle.errors import InputError

__all__ = [
    "LABEL_CONVENTIONS",
    "REGION_CLASSES",
    "label_regions",
    "LAYOUTS",
    "MSD",
    "NIFTI_SUFFIXES",
    "label_mapping",
    "file_stem",
    "case_name",
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


LABEL_CONVENTIONS: dict[str, dict[str, int]] = {
    "brats2021": {"NCR": 1, "ED": 2, "ET": 4},
    "brats2023": {"NCR": 1, "ED": 2, "ET": 3},
    "msd": {"NCR": 2, "ED": 1, "ET": 3},
}
"""Label value of each tumour class on disk: BraTS 2018-2021, BraTS 2023 and MSD Task01_BrainTumour."""


REGION_CLASSES: dict[str, tuple[str, ...]] = {"TC": ("NCR", "ET"), "WT": ("NCR", "ED", "ET"), "ET": ("ET",)}
"""The tumour classes each region is made of, as BraTS rebuilds the regions from a label map."""


def label_regions(labels: np.ndarray | torch.Tensor, convention: str = "brats2021") -> np.ndarray:
    """The regions BraTS rebuilds from a label map, ``(3, ...)`` bool in network order (TC, WT, ET).

    Args:
        labels: a label map ``(H, W, D)``, or with leading dimensions of size 1, with the values of ``convention``.
        convention: a key of :data:`bundle.conventions.LABEL_CONVENTIONS`.

    Example:
        >>> label_regions(np.array([0, 1, 2, 4]))[:, 1:].astype(int).tolist()  # TC, WT, ET of NCR, ED, ET
        [[1, 0, 1], [1, 1, 1], [0, 0, 1]]
    """
    if convention not in LABEL_CONVENTIONS:
        raise InputError(f"label convention must be one of {list(LABEL_CONVENTIONS)}, got {convention!r}.")
    values = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if values.ndim > 3 and math.prod(values.shape[:-3]) == 1:  # (1, H, W, D), or a batch of one
        values = values.reshape(values.shape[-3:])
    classes = LABEL_CONVENTIONS[convention]
    return np.stack([np.isin(values, [classes[c] for c in REGION_CLASSES[region]]) for region in NETWORK_REGIONS])


def label_mapping(source: str, target: str = "brats2021") -> tuple[list[int], list[int]]:
    """``(orig_labels, target_labels)`` for MONAI's ``MapLabelValued``, from one convention to another.

    ``ConvertToMultiChannelBasedOnBratsClassesd`` expects BraTS 2018-2021 values (ET = 4), so BraTS 2023
    and MSD labels are mapped to them first.

    Example:
        >>> label_mapping("msd")
        ([2, 1, 3], [1, 2, 4])
    """
    for name in (source, target):
        if name not in LABEL_CONVENTIONS:
            raise InputError(f"label convention must be one of {list(LABEL_CONVENTIONS)}, got {name!r}.")
    classes = ("NCR", "ED", "ET")
    return [LABEL_CONVENTIONS[source][c] for c in classes], [LABEL_CONVENTIONS[target][c] for c in classes]


LAYOUTS: dict[str, dict] = {
    "brats2021": {"separator": "_", "names": {}, "label": "seg", "convention": "brats2021"},
    "brats2023": {
        "separator": "-",
        "names": {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"},
        "label": "seg",
        "convention": "brats2023",
    },
}
"""Per-case-folder layouts: ``<case>/<case><separator><name>.nii.gz``; ``names`` maps a modality to its
file suffix where they differ (BraTS 2023: t2f = FLAIR, t1n = T1, t1c = T1ce, t2w = T2); ``convention``
names the label values on disk (a key of ``bundle.transforms.LABEL_CONVENTIONS``)."""

MSD = "msd"
"""Medical Segmentation Decathlon Task01_BrainTumour: ``dataset.json``, ``imagesTr/*.nii.gz`` (4D, channels
FLAIR, T1w, T1gd, T2w) and ``labelsTr/*.nii.gz`` (1 edema, 2 non-enhancing, 3 enhancing)."""

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def file_stem(path: str | os.PathLike) -> str:
    """File name without its NIfTI extension only: ``BRATS_001.nii.gz`` -> ``BRATS_001``, ``Pat.00_t1.nii`` -> ``Pat.00_t1``.

    Dots inside a name are kept, so cases ``Pat.00`` and ``Pat.01`` keep distinct output names.
    """
    name = Path(str(path)).name
    for extension in (".nii.gz", ".nii"):
        if name.endswith(extension):
            return name[: -len(extension)]
    return name


def case_name(data: Mapping, default: str = "case", case_key: str = "case", image_key: str = "image") -> str:
    """Name of the case a data dict (or a collated batch of one case) holds.

    Its ``case_key`` entry (set by :func:`discover_cases`), else the file name of the image it was
    loaded from, else ``default``.
    """
    case = data.get(case_key)
    if isinstance(case, (list, tuple)):
        case = case[0] if case else None
    if case:
        return str(case)
    filename = getattr(data.get(image_key), "meta", {}).get("filename_or_obj")
    if isinstance(filename, (list, tuple)):
        filename = filename[0] if filename else None
    return file_stem(filename) if filename else default
