"""The bundle's configs/metadata.json: read it checked, and keep the teacher set's copy (``lckd`` block) in it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bundle import BUNDLE_ROOT
from bundle.conventions import check_teachers
from bundle.errors import InputError, InputFileError
from bundle.io import atomic_write_json, read_json

__all__ = ["EXPECTED_DICE_KEY", "read_metadata", "update_metadata", "read_teachers", "metadata_without_election"]

EXPECTED_DICE_KEY = "lckd_expected_dice"
"""metadata.json's block of the model's Dice per modality combination and region (mean, std over cases), written by
the evaluation with the model's SHA-256, read by the clinical report's acquisition advice."""


def read_metadata(metadata_file: str | os.PathLike, writable: bool = False) -> dict[str, Any]:
    """A bundle's metadata.json, checked to be a JSON object (and, with ``writable``, one the election can update).

    Raises:
        InputError: naming the file, what is wrong and the fix.
    """
    try:
        metadata = read_json(metadata_file)
    except InputFileError:
        raise InputFileError(
            f"{metadata_file} does not exist; restore the bundle's configs/metadata.json (git checkout "
            "configs/metadata.json) or point --metadata_file at a copy of it."
        ) from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("lckd", {}), dict):
        raise InputError(
            f'{metadata_file} must be a JSON object (a bundle\'s metadata, with an optional "lckd" object), got '
            f"{json.dumps(metadata)[:60]}; restore it from the bundle (git checkout configs/metadata.json)."
        )
    if writable and not (os.access(metadata_file, os.W_OK) and os.access(Path(metadata_file).parent, os.W_OK)):
        raise InputError(
            f"{metadata_file} is read-only, but the teacher election writes the teacher set into it; make it and "
            "its folder writable, or point --metadata_file at a writable copy."
        )
    return metadata


def update_metadata(metadata_file: str | os.PathLike, block: Mapping[str, Any], key: str = "lckd") -> None:
    """Set ``metadata[key] = block`` in a bundle's metadata.json atomically, keeping every other key."""
    metadata = read_metadata(metadata_file)
    metadata[key] = dict(block)
    atomic_write_json(metadata_file, metadata)


def metadata_without_election(target: str | os.PathLike) -> Path:
    """``target``: the bundle's configs/metadata.json without the ``lckd`` block a run may have added, written
    atomically, for a run (a test, one arm of a comparison) that must neither read nor write the checkout's file.

    Returns:
        ``target`` as a ``Path``.
    """
    metadata = read_metadata(BUNDLE_ROOT / "configs" / "metadata.json")
    metadata.pop("lckd", None)
    metadata.pop(EXPECTED_DICE_KEY, None)
    return atomic_write_json(target, metadata)


def read_teachers(
    metadata_file: str | os.PathLike, modalities: Sequence[str], key: str = "lckd"
) -> dict[str, str] | None:
    """The teacher set recorded in a bundle's metadata.json, checked against the model's modalities.

    Returns:
        region -> modality, or ``None`` when no election has been recorded yet.

    Raises:
        InputError: when the recorded teachers name a region or a modality this model does not have.
    """
    teachers = read_metadata(metadata_file).get(key, {}).get("teachers")
    if teachers is None:
        return None
    try:
        return check_teachers(teachers, modalities)
    except InputError as error:
        raise InputError(
            f"{metadata_file} records {error} The metadata belongs to another model. Re-elect "
            "(python -m monai.bundle run --config_file \"['configs/train.json','configs/elect.json']\") or remove "
            'its "lckd" block.'
        ) from None
