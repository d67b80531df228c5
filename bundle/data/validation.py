"""Check a dataset's files and a workflow's settings before any training starts.

Every problem is reported as an :class:`~bundle.errors.InputError` naming the file or key, what was
found, what is allowed and how to fix it; all problems of a dataset are listed in one error, so a
user fixes them in one pass.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bundle.conventions import DEFAULT_MODALITIES, LABEL_CONVENTIONS, check_modalities
from bundle.data.discovery import discover_cases
from bundle.errors import InputError
from bundle.flags import flag
from bundle.io import atomic_write_json, file_signature, read_json, unreadable_reason
from bundle.memory import device_memory

__all__ = [
    "checked_cases",
    "check_dataset",
    "voxel_sizes",
    "resampled_shape",
    "MAX_ABS_INTENSITY",
    "VOXEL_SIZE_RANGE",
    "MEMORY_FRACTION_PER_CASE",
]

logger = logging.getLogger(__name__)

LABELLED_SPLITS = ("training", "validation")
MAX_LISTED_PROBLEMS = 20

MAX_ABS_INTENSITY = 1e7
"""Largest intensity magnitude accepted: MRI intensities stay below 1e5; beyond 1e7 a value is a corrupt voxel
(3e38 passes a NaN/Inf check but makes the loss NaN)."""

VOXEL_SIZE_RANGE = (0.1, 10.0)
"""Voxel sizes (mm) a brain MRI can have; outside it the header's affine is wrong (e.g. a zero affine)."""

MIN_AXIS_VOXELS = 4
"""Fewer voxels along an axis than this is a slice or a degenerate header, not a brain volume."""

MEMORY_FRACTION_PER_CASE = 0.25
"""A case resampled to ``pixdim`` (all sequences and the 3 label channels, float32) may use at most this
fraction of the machine's memory; a header claiming 2000^3 voxels or 20 mm voxels is refused before reading."""

LABEL_CHANNELS = 3


def _is_nifti_path(value: Any) -> bool:
    return isinstance(value, str) and value.endswith((".nii", ".nii.gz"))


def _load(path: str, problems: list[str]) -> nib.spatialimages.SpatialImage | None:
    reason = unreadable_reason(path)
    if reason == "absent":
        problems.append(
            f"{path} does not exist; restore it, or remove it from the datalist (delete datalist.json to split again)."
        )
        return None
    if reason:
        problems.append(
            f"{path} is {reason}; only an absent file means a missing sequence: put the image there, or remove "
            "the name to mark the sequence missing."
        )
        return None
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises ImageFileError, EOFError, zlib and gzip errors for foreign files
        problems.append(
            f"{path} is not a readable NIfTI image ({type(error).__name__}: {error}); re-export it as NIfTI (.nii.gz)."
        )
        return None
    dtype = image.get_data_dtype()
    if dtype.names is not None or dtype.kind not in "biuf":
        problems.append(
            f"{path} holds {'RGB' if dtype.names else dtype.name} voxels, not one grey value per voxel; export the "
            "sequence as a scalar (grey-scale) NIfTI image."
        )
        return None
    return image


def voxel_sizes(affine: Any) -> list[float]:
    """The voxel sizes (mm) MONAI resamples with: the lengths of the affine's columns; NaN for a non-finite affine."""
    affine = np.asarray(affine, dtype=np.float64)
    return [float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)] if np.isfinite(affine).all() else [math.nan] * 3


def resampled_shape(shape: Sequence[int], zooms: Sequence[float], pixdim: Sequence[float]) -> list[int]:
    """The grid of an image of ``shape`` voxels of ``zooms`` mm once ``Spacingd`` resamples it to ``pixdim``."""
    return [math.ceil(s * z / p) for s, z, p in zip(shape, zooms, pixdim)]


def _geometry_problem(
    path: str, image: Any, shape: Sequence[int], pixdim: Sequence[float], sequences: int
) -> str | None:
    """A header whose voxel sizes are impossible, or whose grid resampled to ``pixdim`` would not fit in memory."""
    zooms = voxel_sizes(image.affine)
    low, high = VOXEL_SIZE_RANGE
    if not all(low <= z <= high for z in zooms):
        return (
            f"{path} has voxel sizes {[round(z, 4) for z in zooms]} mm (affine {np.round(image.affine[:3, :3], 3).tolist()}); "
            f"a brain MRI has {low}-{high} mm: the header's affine is wrong. Fix the header or export the image again."
        )
    resampled = resampled_shape(shape, zooms, pixdim)
    needed = math.prod(resampled) * (sequences + LABEL_CHANNELS) * 4
    memory = device_memory("cpu")
    budget = MEMORY_FRACTION_PER_CASE * memory
    if needed > budget:
        return (
            f"{path} is {list(shape)} voxels of {[round(z, 2) for z in zooms]} mm: resampled to pixdim {list(pixdim)} it "
            f"becomes {resampled}, about {needed / 2**30:.1f} GB per case, more than {MEMORY_FRACTION_PER_CASE:.0%} of "
            f"this machine's {memory / 2**30:.1f} GB. Check the header, crop the image, or raise pixdim."
        )
    return None


def _spatial_shape(path: str, image: Any, channels: int | None, problems: list[str]) -> tuple[int, ...] | None:
    """Spatial shape of a 3D image (``channels=None``) or of a 4D image with ``channels`` volumes."""
    shape = tuple(int(s) for s in image.shape)
    if channels is None:
        if len(shape) == 4 and shape[3] == 1:  # (X, Y, Z, 1): one volume
            shape = shape[:3]
        if len(shape) == 3 and min(shape) >= MIN_AXIS_VOXELS:
            return shape
        if len(shape) < 3 or (len(shape) == 3 and min(shape) == 1):
            kind = "a 2D image (a single slice)"
        elif len(shape) == 3:
            kind = f"a volume with fewer than {MIN_AXIS_VOXELS} voxels along an axis"
        else:
            volumes = math.prod(shape[3:])
            kind = f"a {len(shape)}D image holding {volumes} volume{'s' if volumes != 1 else ''}"
        problems.append(
            f"{path} is {kind}, of shape {list(image.shape)}; each sequence must be one 3D volume (X, Y, Z) of at "
            f"least {MIN_AXIS_VOXELS} voxels per axis. Split 4D files into one file per sequence, or use the MSD "
            "layout (dataset.json + imagesTr/) for 4D images."
        )
        return None
    if len(shape) == 4 and shape[3] == channels and min(shape[:3]) > 1:
        return shape[:3]
    problems.append(
        f"{path} has shape {list(shape)}; an MSD image must be 4D (X, Y, Z, {channels}) with one volume per modality "
        f"in the configured order. Fix the file or set modalities to its {shape[3] if len(shape) == 4 else '?'} sequences."
    )
    return None


def _gzip_problem(path: str) -> str | None:
    """A ``.gz`` file read to its end, so that gzip verifies its checksum (nibabel reads only the bytes it needs, so a
    flipped bit inside the data would pass as a wrong voxel value)."""
    if not str(path).endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as file:
            while file.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as error:
        return (
            f"{path} is truncated or corrupt: it fails its gzip checksum ({type(error).__name__}: {error}); copy or "
            "export it again."
        )
    return None


def _check_voxels(path: str, image: Any, label_values: Sequence[int] | None, problems: list[str]) -> bool:
    damaged = _gzip_problem(path)
    if damaged:
        problems.append(damaged)
        return False
    try:
        data = np.asanyarray(image.dataobj)
    except (EOFError, OSError, zlib.error, ValueError) as error:
        problems.append(f"{path} is truncated or corrupt ({type(error).__name__}: {error}); copy or export it again.")
        return False
    if label_values is not None:
        values = np.unique(data)
        unknown = [v.item() for v in values if v not in label_values]
        if unknown:
            problems.append(
                f"{path} holds label values {unknown[:10]} outside the dataset's convention {sorted(label_values)} "
                "(0 = background); fix the file, or set dataset_format to the layout whose labels it uses."
            )
            return False
        return True
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            problems.append(
                f"{path} has {int(np.isnan(data).sum())} NaN and {int(np.isinf(data).sum())} infinite voxels; "
                "re-export the image, or replace them (e.g. numpy.nan_to_num) before using it."
            )
            return False
    absurd = np.abs(data.astype(np.float64, copy=False)) > MAX_ABS_INTENSITY
    if absurd.any():
        problems.append(
            f"{path} has {int(absurd.sum())} voxels beyond +-{MAX_ABS_INTENSITY:g} (largest {float(np.abs(data).max()):.3g}); "
            "MRI intensities stay far below that: the file is corrupt. Export it again, or clip those voxels."
        )
        return False
    if not data.any():
        problems.append(
            f"{path} is all zero. A missing sequence is a missing file: delete it (the case then counts the sequence "
            "as missing) or export it again."
        )
        return False
    return True


def _check_case(
    item: Mapping[str, Any],
    split: str,
    modalities: Sequence[str],
    label_values: Sequence[int],
    affine_tolerance: float,
    pixdim: Sequence[float],
    checked: dict[str, str],
    problems: list[str],
) -> None:
    case = item.get("case", "?")
    images = [(key, item[key], None) for key in modalities if key in item]
    if "image" in item:
        images.append(("image", item["image"], len(modalities)))
    unknown = sorted(
        key for key, value in item.items() if key not in (*modalities, "image", "label") and _is_nifti_path(value)
    )
    if unknown:
        problems.append(
            f"case {case} ({split}) has keys {unknown} that are not modalities of this model {list(modalities)}; "
            "rename them in the datalist or add them to modalities."
        )
    if not images:
        problems.append(
            f"case {case} ({split}) has no modality image: every sequence is missing. Add at least one of "
            f"{list(modalities)}, or remove the case from the datalist."
        )
        return
    files = list(images)
    if "label" in item:
        files.append(("label", item["label"], None))
    elif split in LABELLED_SPLITS:
        problems.append(f"case {case} ({split}) has no label file; add its segmentation or move it to the test split.")
    reference: tuple[str, tuple[int, ...], np.ndarray] | None = None
    for key, path, channels in files:
        path = str(path)
        image = _load(path, problems)
        if image is None:
            continue
        shape = _spatial_shape(path, image, channels, problems)
        if shape is None:
            continue
        geometry = _geometry_problem(path, image, shape, pixdim, len(modalities))
        if geometry:
            problems.append(geometry)
            continue
        # each file's own voxels first: a truncated file (its header claiming more voxels than it holds) is named as
        # such, and never becomes the grid the case's healthy files are blamed for not matching
        signature = file_signature(path)
        if checked.get(path) != signature:
            if not _check_voxels(path, image, label_values if key == "label" else None, problems):
                continue
            checked[path] = signature
        affine = np.asarray(image.affine, dtype=np.float64)
        if reference is None:
            reference = (path, shape, affine)
        elif shape != reference[1]:
            problems.append(
                f"{path} ({key}) has shape {list(shape)} but {reference[0]} has {list(reference[1])}; all sequences "
                "and the label of a case must be co-registered on one voxel grid. Resample them to one reference."
            )
            continue
        elif not np.allclose(affine, reference[2], atol=affine_tolerance, rtol=0):
            gap = float(np.abs(affine - reference[2]).max())
            problems.append(
                f"{path} ({key}) has an affine that differs from {reference[0]}'s by up to {gap:.4g} (tolerance "
                f"{affine_tolerance}): the images are not co-registered. Resample them to one reference, or raise "
                "affine_tolerance if the difference is only rounding."
            )
            continue


def check_dataset(
    datalist: Mapping[str, Sequence[Mapping[str, Any]]],
    modalities: Sequence[str],
    label_convention: str,
    affine_tolerance: float = 1e-3,
    cache_file: str | os.PathLike | None = None,
    for_training: bool = False,
    pixdim: Sequence[float] = (1.0, 1.0, 1.0),
    allow_absent_modalities: bool | str = False,
) -> Mapping[str, Sequence[Mapping[str, Any]]]:
    """Check every file of ``datalist`` before a workflow uses it; return ``datalist`` unchanged.

    Checked: each file exists and is a readable NIfTI image; sequences are 3D (MSD images 4D with one
    volume per modality); a case's sequences and label share one shape and affine (within
    ``affine_tolerance``); images have no NaN or Inf and are not all zero; labels only hold the
    values of ``label_convention`` (an empty label is valid); training and validation cases have a
    label; every case has at least one sequence. Only an absent file is a missing sequence: a folder,
    broken link or unreadable file at a sequence's name is a problem. Images hold grey values (not RGB
    or complex) of magnitude at most :data:`MAX_ABS_INTENSITY`; voxel sizes lie in
    :data:`VOXEL_SIZE_RANGE`, and a case resampled to ``pixdim`` fits in memory (estimated from the
    headers, before any voxel is read). With ``for_training``, the training and validation splits are
    not empty and every modality has a file in at least one training case (a model cannot learn a
    sequence it never sees); elsewhere a sequence absent from every case is normal: a site that never
    acquires it, or one new patient without it.

    Reading every voxel is the slow part, so files that passed are recorded in ``cache_file`` with
    their size, modification time, inode and inode change time, and skipped by later runs until any
    of them changes.

    Args:
        datalist: ``{"training": [...], "validation": [...], "test": [...]}`` as from ``load_datalist``.
        modalities: modality names of the model, in channel order.
        label_convention: a key of ``LABEL_CONVENTIONS``: the label values on disk.
        affine_tolerance: largest allowed difference between the affines of one case's files.
        cache_file: JSON file of files already checked; ``None`` checks everything every time.
        for_training: check the splits a training needs (train.json sets it).
        pixdim: voxel size (mm) the workflow resamples to, for the memory estimate.
        allow_absent_modalities: with ``for_training``, accept a modality that no training case has: a site
            of a federated run that never acquires it (the other sites train it; configs/federated.json). Read
            with :func:`bundle.flags.flag`, so the command line's ``"false"`` is false.

    Returns:
        ``datalist``.

    Raises:
        InputError: listing every problem found (up to 20, then how many more).
    """
    modalities = check_modalities(modalities)
    allow_absent_modalities = flag(allow_absent_modalities, "allow_absent_modalities")
    if label_convention not in LABEL_CONVENTIONS:
        raise InputError(f"label_convention must be one of {list(LABEL_CONVENTIONS)}, got {label_convention!r}.")
    label_values = [0, *LABEL_CONVENTIONS[label_convention].values()]
    checked: dict[str, str] = {}
    if cache_file is not None and Path(cache_file).is_file():
        try:
            checked = dict(read_json(cache_file))
        except (InputError, TypeError, ValueError):
            checked = {}
    problems: list[str] = []
    start = time.monotonic()
    cases = [(split, item) for split, items in datalist.items() if isinstance(items, (list, tuple)) for item in items]
    for split, item in cases:
        _check_case(item, split, modalities, label_values, affine_tolerance, pixdim, checked, problems)
    training = [item for split, item in cases if split == "training"]
    if for_training:
        for split, purpose in (("training", "train on"), ("validation", "validate and elect teachers on")):
            if not datalist.get(split):
                problems.insert(
                    0,
                    f"the {split} split is empty, so training has nothing to {purpose}; set val_fraction > 0 and "
                    f"keep cases for training, or list cases under {split!r} in the datalist file.",
                )
    if for_training and not allow_absent_modalities and training and not any("image" in item for item in training):
        absent = [m for m in modalities if not any(m in item for item in training)]
        if absent:
            problems.insert(
                0,
                f"modalities {absent} have no file in any of the {len(training)} training cases, so the model could "
                "never learn them; check the names in modalities (BraTS 2023 files t2f/t1n/t1c/t2w are named "
                "flair/t1/t1ce/t2 here) or remove them (a federated site that never acquires them: "
                "--allow_absent_modalities true).",
            )
    if cache_file is not None:
        try:
            atomic_write_json(cache_file, checked)
        except OSError as error:
            logger.warning(
                f"could not record the checked files in {cache_file} ({error}); the next run checks them again."
            )
    if problems:
        listed = "\n  - ".join(problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise InputError(f"{len(problems)} problem(s) in the dataset:\n  - {listed}{more}")
    logger.info(f"dataset check: {len(cases)} cases passed in {time.monotonic() - start:.1f} s")
    return datalist


def checked_cases(
    dataset_dir: str | os.PathLike,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    label_convention: str = "brats2021",
    dataset_format: str = "auto",
    affine_tolerance: float = 1e-3,
    pixdim: Sequence[float] = (1.0, 1.0, 1.0),
    exclude: Sequence[str | os.PathLike] = (),
) -> list[dict]:
    """Every case of a folder to run a model on (:func:`bundle.data.discover_cases`, any layout the bundle reads),
    checked as :func:`check_dataset` checks a test split; labels are optional.

    Args:
        dataset_dir: the folder.
        modalities: the model's sequences, in channel order.
        label_convention: label values of the labels that are there.
        dataset_format: ``"auto"`` or a layout name.
        affine_tolerance: largest allowed difference between the affines of one case's files.
        pixdim: voxel size (mm) the model resamples to, for the memory estimate.
        exclude: folders inside ``dataset_dir`` that hold no input (e.g. the output folder).

    Raises:
        InputError: listing every problem found.
    """
    cases = discover_cases(dataset_dir, modalities, dataset_format, exclude=exclude)
    return list(check_dataset({"test": cases}, modalities, label_convention, affine_tolerance, pixdim=pixdim)["test"])
