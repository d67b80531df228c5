"""Check a dataset's files and a workflow's settings before any training starts.

Every problem is reported as an :class:`~bundle.errors.InputError` naming the file or key, what was
found, what is allowed and how to fix it; all problems of a dataset are listed in one error, so a
user fixes them in one pass.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bundle.errors import InputError
from bundle.io import atomic_write_json, read_json
from bundle.modalities import check_modalities
from bundle.transforms.labels import LABEL_CONVENTIONS

__all__ = ["check_dataset", "check_settings", "check_writable", "flag"]

logger = logging.getLogger(__name__)

LABELLED_SPLITS = ("training", "validation")
MAX_LISTED_PROBLEMS = 20


def _is_nifti_path(value: Any) -> bool:
    return isinstance(value, str) and value.endswith((".nii", ".nii.gz"))


def _signature(path: str) -> str:
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _load(path: str, problems: list[str]) -> nib.spatialimages.SpatialImage | None:
    if not os.path.isfile(path):
        problems.append(
            f"{path} does not exist; restore it, or remove it from the datalist (delete datalist.json to split again)."
        )
        return None
    try:
        return nib.load(path)
    except Exception as error:  # nibabel raises ImageFileError, EOFError, zlib and gzip errors for foreign files
        problems.append(
            f"{path} is not a readable NIfTI image ({type(error).__name__}: {error}); re-export it as NIfTI (.nii.gz)."
        )
        return None


def _spatial_shape(path: str, image: Any, channels: int | None, problems: list[str]) -> tuple[int, ...] | None:
    """Spatial shape of a 3D image (``channels=None``) or of a 4D image with ``channels`` volumes."""
    shape = tuple(int(s) for s in image.shape)
    if channels is None:
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) == 3 and min(shape) > 1:
            return shape
        kind = "a 2D image" if len(shape) < 3 or min(shape) == 1 else f"a {len(shape)}D image"
        problems.append(
            f"{path} is {kind} of shape {list(image.shape)}; each sequence must be one 3D volume (X, Y, Z). "
            "Split 4D files into one file per sequence, or use the MSD layout (dataset.json + imagesTr/) for 4D images."
        )
        return None
    if len(shape) == 4 and shape[3] == channels and min(shape[:3]) > 1:
        return shape[:3]
    problems.append(
        f"{path} has shape {list(shape)}; an MSD image must be 4D (X, Y, Z, {channels}) with one volume per modality "
        f"in the configured order. Fix the file or set modalities to its {shape[3] if len(shape) == 4 else '?'} sequences."
    )
    return None


def _check_voxels(path: str, image: Any, label_values: Sequence[int] | None, problems: list[str]) -> bool:
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
                "re-export the image, or replace them (e.g. numpy.nan_to_num) before training."
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
        signature = _signature(path)
        if checked.get(path) == signature:
            continue
        if _check_voxels(path, image, label_values if key == "label" else None, problems):
            checked[path] = signature


def check_dataset(
    datalist: Mapping[str, Sequence[Mapping[str, Any]]],
    modalities: Sequence[str],
    label_convention: str,
    affine_tolerance: float = 1e-3,
    cache_file: str | os.PathLike | None = None,
    for_training: bool = False,
) -> Mapping[str, Sequence[Mapping[str, Any]]]:
    """Check every file of ``datalist`` before a workflow uses it; return ``datalist`` unchanged.

    Checked: each file exists and is a readable NIfTI image; sequences are 3D (MSD images 4D with one
    volume per modality); a case's sequences and label share one shape and affine (within
    ``affine_tolerance``); images have no NaN or Inf and are not all zero; labels only hold the
    values of ``label_convention`` (an empty label is valid); training and validation cases have a
    label; every case has at least one sequence. With ``for_training``, every modality also has a file in
    at least one training case (a model cannot learn a sequence it never sees); elsewhere a sequence
    absent from every case is normal: a site that never acquires it, or one new patient without it.

    Reading every voxel is the slow part, so files that passed are recorded in ``cache_file`` with
    their size and modification time and skipped by later runs until they change.

    Args:
        datalist: ``{"training": [...], "validation": [...], "test": [...]}`` as from ``load_datalist``.
        modalities: modality names of the model, in channel order.
        label_convention: a key of ``LABEL_CONVENTIONS``: the label values on disk.
        affine_tolerance: largest allowed difference between the affines of one case's files.
        cache_file: JSON file of files already checked; ``None`` checks everything every time.
        for_training: check that each modality occurs in the training split (train.json sets it).

    Returns:
        ``datalist``.

    Raises:
        InputError: listing every problem found (up to 20, then how many more).
    """
    modalities = check_modalities(modalities)
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
        _check_case(item, split, modalities, label_values, affine_tolerance, checked, problems)
    training = [item for split, item in cases if split == "training"]
    if for_training and training and not any("image" in item for item in training):
        absent = [m for m in modalities if not any(m in item for item in training)]
        if absent:
            problems.insert(
                0,
                f"modalities {absent} have no file in any of the {len(training)} training cases, so the model could "
                "never learn them; check the names in modalities (BraTS 2023 files t2f/t1n/t1c/t2w are named "
                "flair/t1/t1ce/t2 here) or remove them.",
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


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def flag(value: Any, key: str) -> bool:
    """A boolean setting as written in a config or on the command line, read strictly.

    ``python -m monai.bundle run --resume false`` hands the string ``"false"``, which Python reads as
    true; configs read every boolean key through this function instead.

    Args:
        value: a bool, 0 or 1, or one of true/false, 1/0, yes/no, on/off in any case.
        key: the setting's name, for the error message.

    Raises:
        InputError: for any other value, naming the key and the allowed values.

    Example:
        >>> flag("False", "resume"), flag(1, "mlflow"), flag(True, "amp")
        (False, True, True)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise InputError(f"--{key} must be true or false (also 1/0, yes/no, on/off), got {value!r}.")


def check_writable(*folders: str | os.PathLike) -> None:
    """Create each folder if needed and check a file can be written there.

    Raises:
        InputError: naming the folder and the reason.
    """
    for folder in folders:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise InputError(
                f"cannot write to {folder} ({error.strerror or error}); point it at a writable folder "
                "(e.g. --ckpt_dir, --output_dir) or fix its permissions."
            ) from None


def check_settings(
    patch_size: Sequence[int],
    strides: Sequence[int | Sequence[int]],
    batch_size: int = 1,
    max_epochs: int | None = None,
    elect_epoch: int | None = None,
    ckd_weight: float = 0.0,
    writable: Sequence[str | os.PathLike] = (),
    warmup_epochs: int = 0,
) -> None:
    """Check a workflow's numeric settings and output folders before anything expensive runs.

    Args:
        patch_size: training patch and sliding-window size; each axis a multiple of the network's
            total downsampling (the product of ``strides`` along it).
        strides: the network's strides per level (ints or per-axis lists).
        batch_size: at least 1.
        max_epochs: at least 1, and at least ``elect_epoch`` (else no teacher is ever elected).
        elect_epoch: epoch of the first teacher election.
        ckd_weight: weight of the distillation loss, >= 0.
        writable: folders the workflow writes to.
        warmup_epochs: epochs before modality dropping starts; fewer than ``max_epochs``, else the model
            never trains on a missing sequence.

    Raises:
        InputError: for the first setting out of range, with the allowed values.

    Example:
        >>> check_settings([128, 128, 128], [1, 2, 2, 2, 2], batch_size=2, max_epochs=300, elect_epoch=50)
    """
    if isinstance(patch_size, int) or len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
        raise InputError(f"patch_size must be three positive ints, e.g. [128, 128, 128]; got {patch_size}.")
    factors = [math.prod(s[axis] if isinstance(s, (list, tuple)) else s for s in strides) for axis in range(3)]
    for axis, (size, factor) in enumerate(zip(patch_size, factors)):
        if size % factor:
            lower = max(factor, size // factor * factor)
            raise InputError(
                f"patch_size {list(patch_size)} is not divisible along axis {axis} by {factor}, the network's total "
                f"downsampling (product of strides {list(strides)}); use a multiple of {factor}, e.g. {lower} or "
                f"{lower + factor}."
            )
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    if max_epochs is not None and int(max_epochs) < 1:
        raise InputError(f"max_epochs must be >= 1, got {max_epochs}.")
    if max_epochs is not None and elect_epoch is not None and int(elect_epoch) > int(max_epochs):
        raise InputError(
            f"elect_epoch={elect_epoch} is after the last epoch (max_epochs={max_epochs}): no teacher would be "
            "elected and distillation would never run. Lower elect_epoch or raise max_epochs."
        )
    if float(ckd_weight) < 0:
        raise InputError(f"ckd_weight must be >= 0 (0 turns distillation off), got {ckd_weight}.")
    if max_epochs is not None and int(warmup_epochs) >= int(max_epochs):
        raise InputError(
            f"warmup_epochs={warmup_epochs} is not before the last epoch (max_epochs={max_epochs}): the model would "
            "never train with a missing sequence. Lower warmup_epochs (the official recipe: about 40 % of the "
            "training) or raise max_epochs."
        )
    check_writable(*writable)
