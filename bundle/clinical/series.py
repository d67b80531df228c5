"""A study's DICOM series: found, named FLAIR / T1 / T1ce / T2 by rules a site can edit, and read into volumes.

Every file of a study folder is read once, header only (pydicom), and grouped by SeriesInstanceUID. Series that
cannot be segmented are listed with the reason (another modality than MR, a localizer, an enhanced multi-frame
object, a derived image); the others are named by the first rule of ``configs/clinical.json``'s ``series_rules``
whose pattern matches their SeriesDescription and ProtocolName (case-insensitive) and whose contrast condition holds
(ContrastBolusAgent present or absent). A series no rule names is listed, never guessed. When two series match one
sequence, the later one (highest SeriesNumber, as a repeat after motion is) is used and both are named in the notes.
A series is read with SimpleITK once its slices are checked: one orientation, evenly spaced along the normal.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bundle.errors import InputError

__all__ = [
    "Series",
    "StudySeries",
    "find_series",
    "check_rules",
    "name_series",
    "read_series",
    "slice_order",
    "ENHANCED_SOP_CLASSES",
]

ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
}
LOCALIZER_PATTERN = re.compile(r"localizer|localiser|scout|survey|\bloc\b|3.?plane", re.IGNORECASE)
MIN_SLICES = 5
"""Fewer slices than this: a localizer or a partial export, not a volume."""


@dataclass
class Series:
    """One series of a study, from its files' headers."""

    uid: str
    number: int
    description: str
    protocol: str
    modality: str
    sop_class: str
    image_type: tuple[str, ...]
    contrast_agent: str
    files: list[Path] = field(default_factory=list)
    nifti: bool = False
    """a NIfTI file (named by its file name) instead of DICOM slices."""

    @property
    def name(self) -> str:
        """How messages name the series: ``series 5 't2_tse_cor' (24 files)``."""
        return f"series {self.number} {self.description or self.protocol or self.uid!r}".rstrip() + (
            f" ({len(self.files)} files)"
        )


@dataclass
class StudySeries:
    """The outcome of naming a study's series."""

    named: dict[str, Series]
    """sequence -> the series used for it."""
    skipped: list[tuple[Series, str]]
    """series not used, each with the reason."""
    notes: list[str]
    """choices made (two series for one sequence)."""


def find_series(folder: str | Path | Sequence[str | Path]) -> list[Series]:
    """Every DICOM series under ``folder`` (files of any name; non-DICOM files are ignored), by series number; a
    folder without DICOM but with NIfTI files gives one series per file, its name the file's.

    Args:
        folder: the study's folder, or its files (as a DICOM loader such as MONAI Deploy's lists them).

    Raises:
        InputError: when ``folder`` does not exist or holds neither DICOM nor NIfTI files.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(folder, (str, Path)):
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; give the folder of one study's DICOM files.")
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    else:
        files = sorted(Path(p) for p in folder)
        folder = Path(os.path.commonpath([str(p) for p in files])) if files else Path(".")
    series: dict[str, Series] = {}
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = str(header.get("SeriesInstanceUID", ""))
        if not uid:
            continue
        if uid not in series:
            series[uid] = Series(
                uid=uid,
                number=int(header.get("SeriesNumber", 0) or 0),
                description=str(header.get("SeriesDescription", "")),
                protocol=str(header.get("ProtocolName", "")),
                modality=str(header.get("Modality", "")),
                sop_class=str(header.get("SOPClassUID", "")),
                image_type=tuple(str(v).upper() for v in (header.get("ImageType") or ())),
                contrast_agent=str(header.get("ContrastBolusAgent", "") or "").strip(),
            )
        series[uid].files.append(path)
    if not series:
        nifti = [p for p in files if p.name.endswith((".nii", ".nii.gz"))]
        if nifti:
            return [
                Series(
                    uid=str(path),
                    number=number,
                    description=path.name.split(".nii")[0],
                    protocol="",
                    modality="MR",
                    sop_class="",
                    image_type=(),
                    contrast_agent="",
                    files=[path],
                    nifti=True,
                )
                for number, path in enumerate(nifti, start=1)
            ]
        raise InputError(
            f"{folder} holds no DICOM or NIfTI file (searched every file below it); give a study's folder."
        )
    return sorted(series.values(), key=lambda s: (s.number, s.uid))


def _unusable(series: Series) -> str | None:
    if series.nifti:
        return None
    if series.modality != "MR":
        return f"modality {series.modality or 'unknown'}, not MR"
    if series.sop_class in ENHANCED_SOP_CLASSES:
        return (
            f"an enhanced multi-frame object ({ENHANCED_SOP_CLASSES[series.sop_class]}); export the series as "
            "single-frame images from the scanner or PACS"
        )
    if "LOCALIZER" in series.image_type or LOCALIZER_PATTERN.search(f"{series.description} {series.protocol}"):
        return "a localizer"
    if len(series.files) < MIN_SLICES:
        return f"{len(series.files)} slices, fewer than {MIN_SLICES}: a localizer or a partial export"
    if "DERIVED" in series.image_type:
        return "a derived image (a map or reformat), not an acquisition"
    return None


def _matches(series: Series, rule: Mapping[str, Any]) -> bool:
    text = f"{series.description} {series.protocol}"
    if not re.search(rule["pattern"], text, re.IGNORECASE):
        return False
    if "exclude" in rule and re.search(rule["exclude"], text, re.IGNORECASE):
        return False
    contrast = rule.get("contrast")
    return contrast is None or bool(series.contrast_agent) == contrast


def check_rules(rules: Sequence[Mapping[str, Any]], sequences: Iterable[str]) -> None:
    """Each rule names one of ``sequences`` and compiles.

    Raises:
        InputError: naming the rule and the problem.
    """
    sequences = list(sequences)
    for index, rule in enumerate(rules):
        if rule.get("sequence") not in sequences or "pattern" not in rule:
            raise InputError(
                f"series_rules[{index}] = {dict(rule)} needs 'sequence' (one of {sequences}) and 'pattern' (a regular "
                "expression)."
            )
        for key in ("pattern", "exclude"):
            try:
                re.compile(rule.get(key, ""))
            except re.error as error:
                raise InputError(
                    f"series_rules[{index}].{key} {rule[key]!r} is not a regular expression: {error}."
                ) from None
        if rule.get("contrast") not in (None, True, False):
            raise InputError(f"series_rules[{index}].contrast must be true, false or absent, got {rule['contrast']!r}.")


def name_series(series: Sequence[Series], rules: Sequence[Mapping[str, Any]], sequences: Sequence[str]) -> StudySeries:
    """Name each usable series by the first rule that matches it.

    Args:
        series: the study's series (:func:`find_series`).
        rules: ordered rules ``{"sequence", "pattern"[, "exclude"][, "contrast"]}`` (``configs/clinical.json``).
        sequences: the sequences the model knows.

    Returns:
        The series used per sequence, the series skipped with their reasons, and the choices made.

    Raises:
        InputError: when no series can be used, listing each series and why.
    """
    check_rules(rules, sequences)
    candidates: dict[str, list[Series]] = defaultdict(list)
    skipped: list[tuple[Series, str]] = []
    for item in series:
        reason = _unusable(item)
        if reason is None:
            rule = next((r for r in rules if _matches(item, r)), None)
            if rule is None:
                reason = "no rule of series_rules names it (add one to configs/clinical.json if it is a sequence)"
            else:
                candidates[rule["sequence"]].append(item)
                continue
        skipped.append((item, reason))
    named, notes = {}, []
    for sequence in sequences:
        matching = sorted(candidates.get(sequence, []), key=lambda s: s.number)
        if not matching:
            continue
        named[sequence] = matching[-1]
        for other in matching[:-1]:
            skipped.append((other, f"{sequence} again; the later {named[sequence].name} is used"))
            notes.append(f"{other.name} and {named[sequence].name} both match {sequence}: using the later one")
    if not named:
        listing = "; ".join(f"{item.name}: {why}" for item, why in skipped)
        raise InputError(f"no series of the study can be segmented ({listing}).")
    return StudySeries(named=named, skipped=skipped, notes=notes)


def read_series(series: Series):
    """The series as one SimpleITK volume, its slices checked first.

    Raises:
        InputError: naming the series when its slices differ in orientation, repeat a position, or are unevenly
            spaced (missing slices).
    """
    import SimpleITK as sitk

    if series.nifti:
        try:
            image = sitk.ReadImage(str(series.files[0]), sitk.sitkFloat32)
        except RuntimeError:
            raise InputError(f"{series.files[0]} cannot be read as an image; export it again.") from None
        if image.GetDimension() != 3:
            raise InputError(f"{series.files[0]} has {image.GetDimension()} dimensions; give one 3D volume per file.")
        return image
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for path in slice_order(series)])
    return reader.Execute()


def slice_order(series: Series) -> list[Path]:
    """The files of a DICOM series in slice order (along the slices' normal), checked as :func:`read_series` says."""
    import pydicom

    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]
    orientations = {tuple(np.round(np.asarray(h.ImageOrientationPatient, float), 4)) for h in headers}
    if len(orientations) != 1:
        raise InputError(
            f"{series.name} mixes {len(orientations)} slice orientations; export each plane as its own series."
        )
    row, column = np.asarray(next(iter(orientations))).reshape(2, 3)
    normal = np.cross(row, column)
    positions = np.asarray([float(np.dot(normal, np.asarray(h.ImagePositionPatient, float))) for h in headers])
    order = np.argsort(positions)
    gaps = np.diff(positions[order])
    if gaps.size and (gaps.min() < 1e-3 or gaps.max() > 1.1 * gaps.min()):
        raise InputError(
            f"{series.name} has missing slices or uneven spacing (gaps between slices of {gaps.min():.2f}-{gaps.max():.2f}"
            " mm); export the whole series again."
        )
    return [series.files[i] for i in order]
