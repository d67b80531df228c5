"""A minimal MONAI Deploy app: segment every case of a dataset folder with the bundle's TorchScript export.

    python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\
        --meta_file configs/metadata.json --config_file configs/inference.json --key_in_ckpt model
    python scripts/deploy_app.py -m models/model.ts -i /data/new_cases -o /data/segmentations

MONAI Deploy's ``MonaiBundleInferenceOperator`` reads the metadata and inference.json embedded in
model.ts and runs their preprocessing, sliding-window inferer and postprocessing (without LoadImage
and SaveImage). This app adds what it leaves out: a loader emitting each case as one 4-channel
``Image`` (absent sequences all zero, as the network expects) and a writer saving the label map as
NIfTI in the input's space and label convention, ``<output>/<case>_<first sequence>_seg.nii.gz``,
the same file the bundle's own ``inference.json`` writes. The environment needs this bundle's
``bundle`` package (``pip install .``), which the embedded configs import.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from holoscan.conditions import CountCondition
from monai.deploy.core import Application, Image, IOType, Operator, OperatorSpec
from monai.deploy.operators.monai_bundle_inference_operator import IOMapping, MonaiBundleInferenceOperator
from monai.transforms import Compose, LoadImaged

from bundle.data import case_name, discover_cases, file_stem
from bundle.transforms import StackModalitiesd

MODALITIES = ("flair", "t1", "t1ce", "t2")


class CaseLoaderOperator(Operator):
    """Emits the cases of a dataset folder (any layout the bundle reads), one per call, as 4-channel Images.

    Args:
        fragment: the application.
        input_folder: dataset folder (BraTS 2018-2021 / 2023 case folders, or MSD Task01).
    """

    def __init__(self, fragment, *args, input_folder: Path, **kwargs) -> None:
        self.cases = discover_cases(input_folder, MODALITIES)
        self.load = Compose(
            [
                LoadImaged([*MODALITIES, "image"], allow_missing_keys=True, ensure_channel_first=True, image_only=True),
                StackModalitiesd(MODALITIES, image_key="image", mask_key="mask"),
            ]
        )
        super().__init__(fragment, CountCondition(fragment, len(self.cases)), *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")

    def compute(self, op_input, op_output, context) -> None:
        case = self.cases.pop(0)
        image = self.load(case)["image"]
        logging.info(f"{case_name(case)}: {tuple(image.shape)}")
        op_output.emit(Image(image.numpy(), metadata=dict(image.meta)), "image")


class LabelWriterOperator(Operator):
    """Saves each label map it receives as NIfTI in the space of the image it was computed from.

    Args:
        fragment: the application.
        output_folder: where to write ``<case>_<first sequence>_seg.nii.gz``.
    """

    def __init__(self, fragment, *args, output_folder: Path, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("seg")

    def compute(self, op_input, op_output, context) -> None:
        seg = op_input.receive("seg")
        meta = seg.metadata()
        # MonaiBundleInferenceOperator hands label maps over in (D, H, W) order
        labels = np.swapaxes(seg.asnumpy(), 0, 2).astype(np.uint8)
        name = file_stem(meta["filename_or_obj"])
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / f"{name}_seg.nii.gz"
        nib.save(nib.Nifti1Image(labels, np.asarray(meta["original_affine"], dtype=np.float64)), path)
        logging.info(f"wrote {path}")


class LCKDSegmentationApp(Application):
    """Loader -> bundle inference (models/model.ts) -> NIfTI writer; paths from ``-i``, ``-o``, ``-m``."""

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        loader = CaseLoaderOperator(self, input_folder=Path(app_context.input_path), name="loader")
        segment = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            name="lckd_segmentation",
        )
        writer = LabelWriterOperator(self, output_folder=Path(app_context.output_path), name="writer")
        self.add_flow(loader, segment, {("image", "image")})
        self.add_flow(segment, writer, {("pred", "seg")})


if __name__ == "__main__":
    LCKDSegmentationApp().run()
