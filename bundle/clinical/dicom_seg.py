"""The segmentation as a DICOM SEG object referencing the reference series, for PACS and viewers (highdicom).

One binary segment per BraTS region (ET, TC, WT: they overlap, as the regions are nested), each frame referencing
the source slice it lies on. Segment types are SNOMED CT codes from pydicom's code dictionary: ET and TC as
Neoplasm (108369006), WT, the core with its oedema, as Lesion (52988006); all under Morphologically Abnormal
Structure (49755003), made by an automatic algorithm of the Artificial Intelligence family (DCM 123110).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bundle.conventions import NETWORK_REGIONS, label_regions
from bundle.errors import InputError

__all__ = ["SEGMENTS", "write_dicom_seg"]

SEGMENTS = (
    ("ET", "enhancing tumour", "Neoplasm"),
    ("TC", "tumour core", "Neoplasm"),
    ("WT", "whole tumour (core and oedema)", "Lesion"),
)
"""(region, description, SNOMED CT concept name in pydicom's ``codes.SCT``), in segment number order."""

_PATIENT_STUDY_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def write_dicom_seg(
    label,
    source_files: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    convention: str = "brats2021",
    software_version: str = "0",
) -> Path:
    """Write ``label`` (a SimpleITK label map on the grid of the series ``source_files`` make) as a DICOM SEG.

    Args:
        label: label map on the source series' grid, its slices in the order of ``source_files``.
        source_files: the series' DICOM files in slice order (:func:`bundle.clinical.series.slice_order`).
        path: the file to write (``.dcm``).
        convention: label values of ``label`` (a key of :data:`bundle.conventions.LABEL_CONVENTIONS`).
        software_version: written into the SEG's SoftwareVersions.

    Returns:
        ``path``.

    Raises:
        InputError: when highdicom is missing or the label map's grid does not match the series.
    """
    try:
        import highdicom as hd
    except ImportError:
        raise InputError("a DICOM SEG needs highdicom: pip install '.[clinical]'.") from None
    import pydicom
    import SimpleITK as sitk
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(str(file)) for file in source_files]
    for source in sources:  # type 2 (may be empty, must be present): anonymised exports often drop them
        for keyword in _PATIENT_STUDY_TYPE_2:
            if keyword not in source:
                setattr(source, keyword, "")
    array = sitk.GetArrayFromImage(label)  # slices, rows, columns
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if array.shape != expected:
        raise InputError(f"the label map has {array.shape} voxels but the series {expected}; it is not on its grid.")
    regions = label_regions(array, convention)  # (3, slices, rows, columns) in TC, WT, ET order
    masks = np.stack([regions[NETWORK_REGIONS.index(region)] for region, _, _ in SEGMENTS], axis=-1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="LCKD missing-modality brain tumour segmentation",
        version=software_version,
        family=codes.cid7162.ArtificialIntelligence,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{region}: {text}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=getattr(codes.SCT, concept),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, (region, text, concept) in enumerate(SEGMENTS, start=1)
    ]
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lckd_brats bundle",
        manufacturer_model_name="LCKD",
        software_versions=software_version,
        device_serial_number="0",
        series_description="LCKD tumour segmentation",
        omit_empty_frames=False,
    )
    path = Path(path)
    segmentation.save_as(path)
    return path
