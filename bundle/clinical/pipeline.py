"""A study from the scanner to the report: series named and read, co-registered, brain-extracted, aligned to the
atlas, segmented with the sequences present, and the label map returned to the series' own grids.

Stages (each timed, each logged): ``series`` (:mod:`bundle.clinical.series`), ``registration``
(:mod:`bundle.clinical.registration`), ``brain`` (:mod:`bundle.clinical.brain`), ``atlas``
(:mod:`bundle.clinical.atlas`), ``segmentation`` (the bundle's ``configs/inference.json``, run as
``monai.bundle run`` runs it, on the study written as one BraTS case of the sequences found), ``native`` (the label
map back to the reference's grid, and each series' grid on request) and ``outputs`` (NIfTI, DICOM SEG, QC images,
the report). Everything is written into a new folder beside ``output`` and renamed to it at the end, so a failed
study leaves no partial output, and an existing ``output`` is refused before any work.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bundle import BUNDLE_ROOT
from bundle.clinical.atlas import align_to_atlas, load_atlas, to_atlas, to_native
from bundle.clinical.brain import BRAIN_METHODS, extract_brain
from bundle.clinical.registration import MIN_MUTUAL_INFORMATION, MIN_MUTUAL_INFORMATION_SKULL_STRIPPED, coregister
from bundle.clinical.report import (
    acquisition_advice,
    format_advice,
    markdown_to_html,
    qc_png,
    region_volumes_ml,
    report_markdown,
)
from bundle.clinical.series import find_series, name_series, read_series, slice_order
from bundle.conventions import DEFAULT_MODALITIES
from bundle.errors import InputError
from bundle.io import read_json
from bundle.metadata import EXPECTED_DICE_KEY

__all__ = ["CLINICAL_CONFIG", "read_clinical_config", "segment_cases", "segment_study"]

logger = logging.getLogger(__name__)

CLINICAL_CONFIG = BUNDLE_ROOT / "configs" / "clinical.json"


def read_clinical_config(path: str | os.PathLike = CLINICAL_CONFIG) -> dict[str, Any]:
    """configs/clinical.json with its defaults: ``series_rules``, ``registration``, ``brain_extraction``, ``atlas``.

    Raises:
        InputError: naming the file and the key that is wrong.
    """
    config = read_json(path)
    if not isinstance(config, dict) or not isinstance(config.get("series_rules"), list):
        raise InputError(f"{path} must be a JSON object with a 'series_rules' list; restore configs/clinical.json.")
    config.setdefault("registration", {}).setdefault("min_mutual_information", MIN_MUTUAL_INFORMATION)
    config["registration"].setdefault("min_mutual_information_skull_stripped", MIN_MUTUAL_INFORMATION_SKULL_STRIPPED)
    config["registration"].setdefault("refuse_unconverged", True)
    config.setdefault("brain_extraction", "hd-bet")
    config.setdefault("atlas", None)
    if config["brain_extraction"] not in BRAIN_METHODS:
        raise InputError(
            f"{path}: brain_extraction must be one of {list(BRAIN_METHODS)}, got {config['brain_extraction']!r}."
        )
    return config


def _study_name(study: Path | list[Path]) -> str:
    return (
        str(study)
        if isinstance(study, Path)
        else f"{len(study)} files under {os.path.commonpath([str(p) for p in study])}"
    )


class _Stages:
    """Seconds per stage, logged as each ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, what: str):
        logger.info(f"{name}: {what} ...")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        logger.info(f"{name}: done in {self.seconds[name]:.1f} s")


def segment_cases(
    dataset_dir: Path,
    output_dir: Path,
    ckpt_path: Path,
    bundle_root: Path = BUNDLE_ROOT,
    metadata_file: Path | None = None,
) -> list[Path]:
    """The bundle's configs/inference.json on the cases of ``dataset_dir``, as ``monai.bundle run`` runs it.

    Returns:
        The label maps written into ``output_dir``, by name.
    """
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(bundle_root / "configs" / "inference.json"),
        meta_file=str(metadata_file or bundle_root / "configs" / "metadata.json"),
        workflow_type=None,
        bundle_root=str(bundle_root),
        dataset_dir=str(dataset_dir),
        output_dir=str(output_dir),
        ckpt_path=str(ckpt_path),
        num_workers=0,
        mlflow=False,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return sorted(output_dir.glob("*.nii.gz"))


def _model_table(metadata: Path, ckpt_path: Path, model_sha256: str) -> tuple[dict[str, Any] | None, str]:
    """The held-out Dice table in metadata.json when it was measured on these weights (``model_sha256``), and a
    sentence saying so."""
    table = read_json(metadata).get(EXPECTED_DICE_KEY) if metadata.exists() else None
    if not table:
        return None, (
            f"No advice: {metadata} has no '{EXPECTED_DICE_KEY}' table; evaluate the model on held-out cases "
            "(configs/evaluate.json) to write one."
        )
    if table.get("model_sha256") != model_sha256:
        return None, (
            f"No advice: the '{EXPECTED_DICE_KEY}' table in {metadata} was measured on other weights than {ckpt_path}; "
            "evaluate this model (configs/evaluate.json) to write its own."
        )
    source = f"From the model's {table['split']} split ({table['cases']} cases, {table['scoring']} scoring)" + (
        f"; optimistic: that split {table['optimistic']}." if table.get("optimistic") else ", held out from training."
    )
    return table, source


def segment_study(
    study: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    ckpt_path: str | os.PathLike | None = None,
    bundle_root: str | os.PathLike = BUNDLE_ROOT,
    metadata_file: str | os.PathLike | None = None,
    config_file: str | os.PathLike = CLINICAL_CONFIG,
    brain_extraction: str | None = None,
    atlas: str | os.PathLike | None = None,
    all_grids: bool = False,
    dicom_seg: bool = True,
    seed: int = 1,
) -> dict[str, Any]:
    """Segment one study (a folder of DICOM or NIfTI files) and write its outputs into ``output``.

    Args:
        study: the study's folder, or its files.
        output: a new folder for the outputs (refused when it exists).
        ckpt_path: the model (default: ``bundle_root/models/model.pt``).
        bundle_root: the bundle whose configs/inference.json segments.
        metadata_file: the model's metadata.json (default: ``bundle_root/configs/metadata.json``): its version, and
            the Dice table the advice reads.
        config_file: the clinical settings (series rules, registration threshold, brain extraction, atlas).
        brain_extraction: one of :data:`bundle.clinical.brain.BRAIN_METHODS` (default: the config's, ``"hd-bet"``).
        atlas: a skull-stripped T1 template on the model's grid (default: the config's, else the MNI template).
        all_grids: also write the label map in each series' own grid.
        dicom_seg: write ``segmentation.dcm`` (off where another writer, such as MONAI Deploy's, writes the SEG).
        seed: of the registrations' sampling.

    Returns:
        The summary written as ``output/study.json``: series used and skipped, registrations, volumes, advice, seconds.

    Raises:
        InputError: one line naming the series or file at fault; nothing is written then.
    """
    study = Path(study) if isinstance(study, (str, os.PathLike)) else [Path(p) for p in study]
    output, bundle_root = Path(output), Path(bundle_root)
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else bundle_root / "models" / "model.pt"
    metadata_file = Path(metadata_file) if metadata_file is not None else bundle_root / "configs" / "metadata.json"
    if output.exists():
        raise InputError(f"{output} already exists; give a new folder for this study's outputs (nothing was written).")
    if not ckpt_path.is_file():
        raise InputError(f"{ckpt_path} does not exist; train a model (make demo) or pass --ckpt_path.")
    config = read_clinical_config(config_file)
    method = brain_extraction or config["brain_extraction"]
    if method not in BRAIN_METHODS:
        raise InputError(f"brain extraction must be one of {list(BRAIN_METHODS)}, got {method!r}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = _Stages()

    with stage("series", f"finding the series of {_study_name(study)}"):
        found = name_series(find_series(study), config["series_rules"], DEFAULT_MODALITIES)
        images = {sequence: read_series(series) for sequence, series in found.named.items()}
    present = [m for m in DEFAULT_MODALITIES if m in images]
    names = {sequence: series.name for sequence, series in found.named.items()}
    for sequence in present:
        logger.info(f"series: {sequence} <- {names[sequence]}")
    for series, why in found.skipped:
        logger.info(f"series: not used {series.name}: {why}")
    with stage("registration", f"registering {', '.join(present)} to the reference"):
        threshold = "min_mutual_information" + ("_skull_stripped" if method == "none" else "")
        reference, registrations = coregister(
            images, seed, config["registration"][threshold], names, config["registration"]["refuse_unconverged"]
        )
    with stage("brain", f"brain extraction ({method}) on the {reference} series"):
        brain = extract_brain(images[reference], method)
    with stage("atlas", "aligning the brain to the atlas"):
        atlas_image = load_atlas(atlas or config["atlas"])
        atlas_registration = align_to_atlas(images[reference], brain, atlas_image, seed)
        on_atlas = to_atlas(images, registrations, atlas_registration, atlas_image, brain)

    import SimpleITK as sitk

    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}-partial-", dir=output.parent))
    try:
        with stage("segmentation", f"segmenting with {', '.join(present)}"):
            case = scratch / "atlas" / "input" / "study"
            case.mkdir(parents=True)
            for sequence, image in on_atlas.items():
                sitk.WriteImage(image, str(case / f"study_{sequence}.nii.gz"))
            (label_file,) = segment_cases(
                case.parent, scratch / "atlas" / "segmentation", ckpt_path, bundle_root, metadata_file
            )
            atlas_label = sitk.ReadImage(str(label_file))
        with stage("native", "label map back to the native grids"):
            native = {reference: to_native(atlas_label, images[reference], atlas_registration)}
            if all_grids:
                for sequence in present:
                    if sequence != reference:
                        native[sequence] = to_native(
                            atlas_label, images[sequence], atlas_registration, registrations[sequence]
                        )
        with stage("outputs", "writing NIfTI, DICOM SEG, QC images and the report"):
            summary = _write_outputs(
                scratch,
                _study_name(study),
                ckpt_path,
                metadata_file,
                found,
                reference,
                registrations,
                atlas_registration,
                on_atlas,
                atlas_label,
                native,
                brain,
                images,
                dicom_seg,
            )
        summary["seconds"] = dict(stage.seconds)
        summary["seconds"]["total"] = sum(stage.seconds.values())
        markdown = report_markdown(summary)
        (scratch / "report.md").write_text(markdown)
        (scratch / "report.html").write_text(markdown_to_html(markdown, f"Segmentation of {_study_name(study)}"))
        (scratch / "study.json").write_text(json.dumps(summary, indent=1) + "\n")
        os.rename(scratch, output)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    logger.info(f"wrote {output} in {summary['seconds']['total']:.0f} s: {', '.join(sorted(summary['files']))}")
    return summary


def _write_outputs(
    folder: Path,
    study: str,
    ckpt_path: Path,
    metadata_file: Path,
    found,
    reference: str,
    registrations: Mapping[str, Any],
    atlas_registration,
    on_atlas: Mapping[str, Any],
    atlas_label,
    native: Mapping[str, Any],
    brain,
    images: Mapping[str, Any],
    dicom_seg: bool,
) -> dict[str, Any]:
    import SimpleITK as sitk

    from bundle.clinical.dicom_seg import write_dicom_seg
    from bundle.networks.model_file import model_sha256

    present = [m for m in DEFAULT_MODALITIES if m in images]
    files = []
    for sequence, label in native.items():
        sitk.WriteImage(label, str(folder / f"segmentation_{sequence}_grid.nii.gz"))
        files.append(f"segmentation_{sequence}_grid.nii.gz")
    sitk.WriteImage(brain, str(folder / f"brain_mask_{reference}_grid.nii.gz"))
    files.append(f"brain_mask_{reference}_grid.nii.gz")
    sitk.WriteImage(sitk.Cast(atlas_label, sitk.sitkUInt8), str(folder / "segmentation_atlas.nii.gz"))
    files.append("segmentation_atlas.nii.gz")
    shutil.rmtree(folder / "atlas")  # inference's own copy, now segmentation_atlas.nii.gz
    source = found.named[reference]
    if dicom_seg and not source.nifti:
        version = str(read_json(metadata_file).get("version", "0"))
        write_dicom_seg(native[reference], slice_order(source), folder / "segmentation.dcm", software_version=version)
        files.append("segmentation.dcm")
    (folder / "qc_registration.png").write_bytes(
        qc_png(
            {s: on_atlas[s] for s in present},
            None,
            f"Registration: each sequence on the atlas grid; cyan: {reference}'s outline",
            contour_of=on_atlas[reference],
        )
    )
    (folder / "qc_segmentation.png").write_bytes(
        qc_png({s: on_atlas[s] for s in present}, atlas_label, "Segmentation on the atlas grid (red: tumour)")
    )
    files += ["qc_registration.png", "qc_segmentation.png", "report.md", "report.html", "study.json"]
    weights_sha256 = model_sha256(ckpt_path)  # the bytes inference read, not a second read
    table, advice_source = _model_table(metadata_file, ckpt_path, weights_sha256)
    advice = acquisition_advice(table, present, DEFAULT_MODALITIES)
    return {
        "study": study,
        "model": str(ckpt_path),
        "model_sha256": weights_sha256,
        "reference": reference,
        "sequences": present,
        "missing": [m for m in DEFAULT_MODALITIES if m not in present],
        "series": {
            s: {
                "name": found.named[s].name,
                "uid": found.named[s].uid,
                "mutual_information": None if s == reference else registrations[s].mutual_information,
                "transform_to_reference": list(registrations[s].transform.GetParameters()),
            }
            for s in present
        },
        "atlas_transform": {
            "parameters": list(atlas_registration.transform.GetParameters()),
            "fixed_parameters": list(atlas_registration.transform.GetFixedParameters()),
            "mutual_information": atlas_registration.mutual_information,
        },
        "skipped": [f"{series.name}: {why}" for series, why in found.skipped],
        "notes": list(found.notes),
        "volumes_ml": region_volumes_ml(native[reference]),
        "advice": format_advice(advice, present, table) if advice else [],
        "advice_table": advice,
        "advice_source": advice_source,
        "files": files,
    }
