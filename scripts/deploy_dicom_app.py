"""The MONAI Deploy DICOM app: a study's DICOM files in, label maps in native space, a DICOM SEG and a report out.

    python scripts/deploy_dicom_app.py -m models/model.pt -i /data/study_dicom -o /data/study_out

Operators: MONAI Deploy's ``DICOMDataLoaderOperator`` reads the input folder into studies, series and instances;
``ClinicalPipelineOperator`` names the series by configs/clinical.json's rules and runs the clinical path
(:func:`bundle.clinical.pipeline.segment_study`: co-registration, brain extraction, atlas alignment, the bundle's
inference with the sequences present, the label map back to the reference series' grid) on the instances of each
study, writing ``<output>/<StudyInstanceUID>/`` (NIfTI, QC images, report); MONAI Deploy's
``DICOMSegmentationWriterOperator`` then writes the DICOM SEG referencing the reference series, one segment per
tumour class (NCR, ED, ET: Deploy's writer takes a label map, so its segments do not overlap; ``python -m
bundle.clinical`` writes the BraTS regions ET, TC, WT instead). The model is ``models/model.pt`` (``-m``), read with
this bundle's configs (the folder above ``scripts/``); the environment needs the bundle's ``clinical`` extra. A bad
study stops the app with the clinical path's one-line error, before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from holoscan.conditions import CountCondition
from monai.deploy.core import Application, Image, Operator, OperatorSpec
from monai.deploy.core.domain import SelectedSeries, StudySelectedSeries
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from pydicom.sr.codedict import codes

from bundle import BUNDLE_ROOT
from bundle.clinical.pipeline import segment_study
from bundle.clinical.series import find_series, slice_order
from bundle.conventions import LABEL_CONVENTIONS
from bundle.errors import InputError, install_excepthook
from bundle.io import read_json

CLASSES = (
    ("NCR", "necrotic tumour core", "Necrosis"),
    ("ED", "peritumoral oedema", "Edema"),
    ("ET", "enhancing tumour", "Neoplasm"),
)
"""Segments of Deploy's SEG, numbered 1-3: (class, description, SNOMED CT concept in pydicom's ``codes.SCT``)."""


class ClinicalPipelineOperator(Operator):
    """The clinical path on each study Deploy's loader emits; the reference series' label map for the SEG writer.

    Args:
        fragment: the application.
        model: ``models/model.pt``.
        output_folder: one subfolder per study (its StudyInstanceUID) is written there.
    """

    def __init__(self, fragment, *args, model: Path, output_folder: Path, **kwargs) -> None:
        self.model = Path(model)
        self.output_folder = Path(output_folder)
        super().__init__(fragment, CountCondition(fragment, 1), *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("dicom_study_list")
        spec.output("seg_image")
        spec.output("study_selected_series_list")

    def compute(self, op_input, op_output, context) -> None:
        studies = op_input.receive("dicom_study_list")
        if len(studies) != 1:
            raise InputError(f"the input folder holds {len(studies)} studies; give the app one study per run.")
        study = studies[0]
        by_file = {
            Path(instance.get_native_sop_instance().filename): (series, instance)
            for series in study.get_all_series()
            for instance in series.get_sop_instances()
        }
        output = self.output_folder / study.StudyInstanceUID
        summary = segment_study(sorted(by_file), output, ckpt_path=self.model, bundle_root=BUNDLE_ROOT, dicom_seg=False)
        reference = summary["reference"]
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(output / f"segmentation_{reference}_grid.nii.gz")))
        classes = np.zeros_like(label)
        for number, (name, _, _) in enumerate(CLASSES, start=1):
            classes[label == LABEL_CONVENTIONS["brats2021"][name]] = number
        # frames in the order of Deploy's instances of the reference series (our label map is in slice order)
        uid = summary["series"][reference]["uid"]
        series = next(s for s in study.get_all_series() if s.SeriesInstanceUID == uid)
        instances = [Path(i.get_native_sop_instance().filename) for i in series.get_sop_instances()]
        position = {path: index for index, path in enumerate(slice_order(find_series(instances)[0]))}
        order = [position[path] for path in instances]
        selection = StudySelectedSeries(study)
        selection.add_selected_series(SelectedSeries(reference, series))
        op_output.emit(Image(classes[order]), "seg_image")
        op_output.emit([selection], "study_selected_series_list")
        logging.info(f"wrote {output}; the DICOM SEG follows")


class LCKDDicomApp(Application):
    """DICOM loader -> clinical path -> DICOM SEG writer; paths from ``-i``, ``-o``, ``-m``."""

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        input_folder, output = Path(app_context.input_path), Path(app_context.output_path)
        model = Path(app_context.model_path)
        if model.is_dir():
            model = model / "model.pt"
        if not model.is_file():
            raise InputError(f"{model} does not exist; give the trained models/model.pt with -m.")
        if not input_folder.is_dir():
            raise InputError(f"{input_folder} is not a folder; give one study's DICOM folder with -i.")
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="loader")
        pipeline = ClinicalPipelineOperator(self, model=model, output_folder=output, name="clinical_path")
        version = str(read_json(BUNDLE_ROOT / "configs" / "metadata.json").get("version", "0"))
        descriptions = [
            SegmentDescription(
                segment_label=f"{name}: {text}",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=getattr(codes.SCT, concept),
                algorithm_name="LCKD missing-modality brain tumour segmentation",
                algorithm_version=version,
            )
            for name, text, concept in CLASSES
        ]
        writer = DICOMSegmentationWriterOperator(
            self, segment_descriptions=descriptions, output_folder=output, omit_empty_frames=False, name="seg_writer"
        )
        self.add_flow(loader, pipeline, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(
            pipeline, writer, {("seg_image", "seg_image"), ("study_selected_series_list", "study_selected_series_list")}
        )


if __name__ == "__main__":
    install_excepthook()
    LCKDDicomApp().run()
