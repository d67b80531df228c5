"""Phantom studies as a hospital has them: a head with skull and scalp, each sequence in its own grid and position,
written as DICOM series, with the truth kept in every native grid.

An anatomical phantom (:func:`bundle.data.phantoms.make_phantom`, the brain on the BraTS grid) gets a head around the
brain (a CSF rim, the skull's tables and marrow, the scalp), each layer with each sequence's contrast. Each acquired
sequence is then resampled into its own grid, as a scanner protocol would acquire it (FLAIR 0.9 x 0.9 x 3 mm axial, T1
1 mm sagittal, T1ce 1 mm axial, T2 0.5 x 0.5 x 4 mm coronal; ``coarsen`` multiplies every spacing for small tests),
with the head moved by a random rigid transform (up to ``max_degrees`` about a random axis and ``max_mm`` in a random
direction), as a patient moves between series. Each series is written as single-frame MR DICOM (pydicom) with the
tags a converter reads (orientation, position, spacing, series description in one vendor's style, contrast agent,
TR/TE/TI). The truth is kept beside the DICOM: the label map in the atlas grid and in each native grid, and each
sequence's transform (native point to atlas point), and each sequence skull-stripped on the atlas grid (the case as
BraTS would distribute it), in ``truth/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from bundle.conventions import DEFAULT_MODALITIES
from bundle.data.phantoms import CONTRAST, make_phantom
from bundle.errors import InputError

__all__ = ["PROTOCOLS", "VENDORS", "HEAD_CONTRAST", "add_head", "make_study", "drawn_transform"]

logger = logging.getLogger(__name__)

PROTOCOLS: dict[str, dict[str, Any]] = {
    "flair": {"plane": "axial", "spacing": (0.9, 0.9, 3.0), "tr": 9000.0, "te": 120.0, "ti": 2500.0},
    "t1": {"plane": "sagittal", "spacing": (1.0, 1.0, 1.0), "tr": 2300.0, "te": 2.3, "ti": 900.0},
    "t1ce": {"plane": "axial", "spacing": (1.0, 1.0, 1.0), "tr": 2300.0, "te": 2.3, "ti": 900.0},
    "t2": {"plane": "coronal", "spacing": (0.5, 0.5, 4.0), "tr": 5000.0, "te": 100.0, "ti": None},
}
"""How each sequence is acquired: plane, voxel size (in-plane row and column, slice) in mm, TR/TE/TI in ms."""

VENDORS: dict[str, dict[str, str]] = {
    "SIEMENS": {
        "flair": "t2_tirm_tra_dark-fluid",
        "t1": "t1_mprage_sag_p2_iso",
        "t1ce": "t1_mprage_tra_p2_iso_KM",
        "t2": "t2_tse_cor",
    },
    "GE MEDICAL SYSTEMS": {
        "flair": "AX T2 FLAIR",
        "t1": "SAG 3D T1 BRAVO",
        "t1ce": "AX 3D T1 BRAVO POST GAD",
        "t2": "COR T2 FSE",
    },
    "Philips": {"flair": "FLAIR_AX", "t1": "3D_T1W_TFE_SAG", "t1ce": "3D_T1W_TFE_AX +C", "t2": "T2W_TSE_COR"},
}
"""Series descriptions in each vendor's style; a study takes one vendor."""

HEAD_CONTRAST: dict[str, dict[str, float]] = {
    "flair": {"bone": 0.04, "marrow": 0.55, "scalp": 0.70},
    "t1": {"bone": 0.04, "marrow": 0.90, "scalp": 1.00},
    "t1ce": {"bone": 0.04, "marrow": 0.90, "scalp": 1.00},
    "t2": {"bone": 0.04, "marrow": 0.45, "scalp": 0.65},
}
"""Relative intensity of the head's layers, on :data:`bundle.data.phantoms.CONTRAST`'s scale: cortical bone dark in
every sequence, marrow and scalp fat bright on T1."""

_LAYERS_MM = (("csf", 0.0, 2.5), ("bone", 2.5, 4.0), ("marrow", 4.0, 6.5), ("bone", 6.5, 8.0), ("scalp", 8.0, 14.0))
"""The head's layers by distance from the brain's surface, in mm."""

_PLANES = {  # (row direction, column direction) in LPS patient coordinates, as DICOM's ImageOrientationPatient
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


def add_head(
    rng: np.random.Generator, images: dict[str, np.ndarray], spacing: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The phantom's images with a head around the brain (layers of :data:`_LAYERS_MM`), and the brain mask.

    Args:
        rng: random generator (noise).
        images: ``{sequence: image}`` on one grid, background (outside the brain) exactly 0.
        spacing: the grid's voxel size in mm.

    Returns:
        ``({sequence: image with head}, boolean brain mask)``.
    """
    brain = np.any([image > 0 for image in images.values()], axis=0)
    distance = ndimage.distance_transform_edt(~brain) * spacing
    headed = {}
    for sequence, image in images.items():
        brain_mean = float(image[brain].mean())
        scale = brain_mean / np.mean([CONTRAST[sequence][k] for k in ("csf", "gm", "wm")])
        contrast = {**HEAD_CONTRAST[sequence], "csf": CONTRAST[sequence]["csf"]}
        layers = np.zeros_like(image)
        for tissue, start, stop in _LAYERS_MM:
            layers[(distance > start) & (distance <= stop)] = contrast[tissue] * scale
        sigma = 0.025 * brain_mean
        noisy = np.sqrt(
            (layers + sigma * rng.standard_normal(image.shape)) ** 2 + (sigma * rng.standard_normal(image.shape)) ** 2
        )
        head = (distance > 0) & (distance <= _LAYERS_MM[-1][2])
        headed[sequence] = np.where(brain, image, np.where(head, noisy, 0.0)).astype(np.float32)
    return headed, brain


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError:
        raise InputError("the clinical path needs SimpleITK: pip install '.[clinical]'.") from None
    return sitk


def _atlas_image(array: np.ndarray, spacing: float):
    """A SimpleITK image of an array on the phantoms' BraTS grid (RAS affine diag(-s, -s, s), origin (0, 239, 0))."""
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin((0.0, -239.0, 0.0))  # LPS of the RAS origin (0, 239, 0)
    return image


def _random_rigid(rng: np.random.Generator, centre: Sequence[float], max_degrees: float, max_mm: float):
    """A rigid transform (native point -> atlas point) about ``centre``: a random axis and angle, a random shift."""
    sitk = _sitk()
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.0, max_degrees))
    shift = rng.standard_normal(3)
    shift *= rng.uniform(0.0, max_mm) / np.linalg.norm(shift)
    transform = sitk.VersorRigid3DTransform()
    transform.SetCenter(tuple(float(c) for c in centre))
    transform.SetRotation(tuple(float(a) for a in axis), float(angle))
    transform.SetTranslation(tuple(float(s) for s in shift))
    return transform


def _native_grid(plane: str, spacing: Sequence[float], centre: Sequence[float], fov_mm: float, depth_mm: float):
    """An empty image: the grid a scanner acquires in ``plane``, centred on ``centre`` (LPS)."""
    sitk = _sitk()
    row, column = (np.asarray(v) for v in _PLANES[plane])
    normal = np.cross(row, column)
    size = [int(round(fov_mm / spacing[0])), int(round(fov_mm / spacing[1])), int(round(depth_mm / spacing[2]))]
    direction = np.stack([row, column, normal], axis=1)
    extent = direction @ (np.asarray(spacing) * (np.asarray(size) - 1))
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(tuple(float(s) for s in spacing))
    grid.SetDirection(tuple(float(d) for d in direction.flatten()))
    grid.SetOrigin(tuple(float(c) for c in np.asarray(centre) - extent / 2))
    return grid


def _write_series(
    folder: Path, image, sequence: str, study: dict[str, str], number: int, description: str, vendor: str
) -> None:
    """``image`` (SimpleITK, LPS) as single-frame MR DICOM files, one per slice, in ``folder``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    array = _sitk().GetArrayFromImage(image)  # slices, rows, columns
    pixels = np.clip(np.round(array), 0, 65535).astype(np.uint16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing, origin = image.GetSpacing(), np.asarray(image.GetOrigin())
    protocol = PROTOCOLS[sequence]
    series_uid = generate_uid()
    for index in range(pixels.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"  # explicit VR little endian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.Manufacturer, ds.MagneticFieldStrength = "MR", vendor, 3.0
        ds.PatientName, ds.PatientID = study["patient"], study["patient"]
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = study["study_uid"], study["frame_uid"]
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyDate = ds.SeriesDate = "20261203"
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, number, index + 1
        ds.SeriesDescription = ds.ProtocolName = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.RepetitionTime, ds.EchoTime = protocol["tr"], protocol["te"]
        if protocol["ti"] is not None:
            ds.InversionTime = protocol["ti"]
        if sequence == "t1ce":
            ds.ContrastBolusAgent = "GADOTERATE"
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.ImagePositionPatient = [float(v) for v in origin + direction[:, 2] * spacing[2] * index]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows, between columns
        ds.SliceThickness = ds.SpacingBetweenSlices = float(spacing[2])
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = pixels[index].tobytes()
        ds.save_as(folder / f"IM{index + 1:04d}.dcm", enforce_file_format=True)


def make_study(
    out_dir: str | Path,
    seed: int = 0,
    sequences: Sequence[str] = DEFAULT_MODALITIES,
    spacing: float = 1.0,
    coarsen: float = 1.0,
    max_degrees: float = 15.0,
    max_mm: float = 20.0,
    vendor: str | None = None,
) -> dict[str, Any]:
    """Write one phantom study: ``dicom/<number>_<description>/IM*.dcm`` per sequence and the truth in ``truth/``.

    Args:
        out_dir: the study's folder (must not exist).
        seed: the study is a function of it.
        sequences: the sequences acquired (any non-empty subset of FLAIR, T1, T1ce, T2).
        spacing: the atlas grid's voxel size in mm (1: BraTS's 240 x 240 x 155).
        coarsen: every native voxel size times this (4 makes a study of a few MB for tests).
        max_degrees, max_mm: the largest rotation and shift of the head in each series.
        vendor: a key of :data:`VENDORS` (default: one drawn at random).

    Returns:
        What ``truth/study.json`` holds: vendor, sequences, and per sequence its series number, description and
        transform (``VersorRigid3DTransform`` parameters and centre, native point -> atlas point).

    Example:
        >>> make_study("study_0", seed=0, sequences=["flair", "t2"], spacing=3.0, coarsen=4.0)["sequences"]
        ['flair', 't2']
    """
    sitk = _sitk()
    unknown = [s for s in sequences if s not in PROTOCOLS]
    if not sequences or unknown or len(set(sequences)) != len(sequences):
        raise InputError(
            f"sequences must be a non-empty subset of {list(PROTOCOLS)} without repeats, got {list(sequences)}."
        )
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists; choose a new folder for the study.")
    rng = np.random.default_rng([seed, 2027])
    vendor = vendor or str(rng.choice(sorted(VENDORS)))
    if vendor not in VENDORS:
        raise InputError(f"vendor must be one of {sorted(VENDORS)}, got {vendor!r}.")
    images, label, _ = make_phantom(np.random.default_rng([seed, 0]), spacing, modalities=list(sequences))
    images, brain = add_head(rng, images, spacing)
    truth = out_dir / "truth"
    truth.mkdir(parents=True)
    atlas_label = _atlas_image(label, spacing)
    sitk.WriteImage(atlas_label, str(truth / "atlas_label.nii.gz"))
    sitk.WriteImage(_atlas_image(brain.astype(np.uint8), spacing), str(truth / "atlas_brain.nii.gz"))
    for sequence in sequences:  # the skull-stripped case as BraTS would give it: an exact atlas for tests
        sitk.WriteImage(_atlas_image(images[sequence] * brain, spacing), str(truth / f"atlas_{sequence}.nii.gz"))
    centre = atlas_label.TransformContinuousIndexToPhysicalPoint([c for c in np.argwhere(brain).mean(0)])
    study = {"patient": f"PHANTOM^{seed:04d}", "study_uid": _uid(), "frame_uid": _uid()}
    record: dict[str, Any] = {"vendor": vendor, "seed": seed, "sequences": list(sequences), "series": {}}
    for number, sequence in enumerate(sequences, start=2):
        protocol = PROTOCOLS[sequence]
        transform = _random_rigid(rng, centre, max_degrees, max_mm)
        native_centre = transform.GetInverse().TransformPoint(centre)
        native_spacing = [s * coarsen for s in protocol["spacing"]]
        grid = _native_grid(protocol["plane"], native_spacing, native_centre, fov_mm=240.0, depth_mm=200.0)
        image = sitk.Resample(_atlas_image(images[sequence], spacing), grid, transform, sitk.sitkLinear, 0.0)
        native_label = sitk.Resample(atlas_label, grid, transform, sitk.sitkNearestNeighbor, 0)
        sitk.WriteImage(sitk.Cast(native_label, sitk.sitkUInt8), str(truth / f"{sequence}_label.nii.gz"))
        description = VENDORS[vendor][sequence]
        folder = out_dir / "dicom" / f"{number:03d}_{description.replace(' ', '_').replace('+', 'plus')}"
        _write_series(folder, image, sequence, study, number, description, vendor)
        record["series"][sequence] = {
            "number": number,
            "description": description,
            "transform": {"parameters": list(transform.GetParameters()), "centre": list(transform.GetCenter())},
        }
    (truth / "study.json").write_text(json.dumps(record, indent=1))
    logger.info(f"wrote study {out_dir} ({vendor}; {', '.join(sequences)})")
    return record


def drawn_transform(record: dict[str, Any], sequence: str):
    """The transform a study was drawn with for ``sequence`` (native point -> atlas point), from its ``study.json``."""
    transform = _sitk().VersorRigid3DTransform()
    transform.SetCenter(record["series"][sequence]["transform"]["centre"])
    transform.SetParameters(record["series"][sequence]["transform"]["parameters"])
    return transform


def _uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()
