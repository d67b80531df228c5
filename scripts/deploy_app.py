"""A minimal MONAI Deploy app: segment every case of a dataset folder with the bundle's TorchScript export.

    python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\
        --meta_file configs/metadata.json --config_file configs/inference.json
    python scripts/deploy_app.py -m models/model.ts -i /data/new_cases -o /data/segmentations

MONAI Deploy's ``MonaiBundleInferenceOperator`` reads the metadata and inference.json embedded in
model.ts and runs their preprocessing, sliding-window inferer and postprocessing (without LoadImage
and SaveImage). This app adds what it leaves out: a loader emitting each case as one 4-channel
``Image`` (absent sequences all zero, as the network expects) and a writer saving the label map as
NIfTI in the input's space and label convention, ``<output>/<case>_<first sequence>_seg.nii.gz``,
the same file the bundle's own ``inference.json`` writes, then its ``<case>_modalities.json``. Both are
written atomically, only under the output folder. Before anything runs, the app checks the model file
and every case as ``inference.json`` does (readable NIfTI, finite and plausible intensities, sequences
co-registered); a problem stops it with a one-line error. The environment needs this bundle's ``bundle``
package (``pip install .``), which the embedded configs import.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from holoscan.conditions import CountCondition
from monai.deploy.core import Application, Image, IOType, Operator, OperatorSpec
from monai.deploy.operators.monai_bundle_inference_operator import IOMapping, MonaiBundleInferenceOperator
from monai.transforms import Compose, LoadImaged

from bundle.conventions import DEFAULT_MODALITIES as MODALITIES
from bundle.conventions import case_name, file_stem
from bundle.data import checked_cases, dataset_convention
from bundle.errors import InputError, brief, install_excepthook
from bundle.io import atomic_save_nifti, unreadable_reason
from bundle.networks import model_preprocessing
from bundle.transforms import StackModalitiesd, write_modalities_record


def check_inputs(input_folder: Path, model_path: Path) -> list[dict]:
    """The cases of ``input_folder``, after the checks ``inference.json`` runs, and a loadable ``model_path``.

    Raises:
        InputError: naming the file and the fix (one listed error for every problem of the cases).
    """
    models = sorted(model_path.glob("*.ts")) if model_path.is_dir() else [model_path]
    for model in models or [model_path / "model.ts"]:
        reason = unreadable_reason(model)
        if reason:
            raise InputError(
                f"model {model} is {'missing' if reason == 'absent' else reason}; export it first (see {__file__})."
            )
        try:
            torch.jit.load(str(model), map_location="cpu")
        except Exception as error:  # TorchScript raises RuntimeError or ValueError for truncated or foreign files
            raise InputError(
                f"{model} is not a readable TorchScript model ({brief(error)}); export it again with "
                "python -m monai.bundle ckpt_export (see the top of scripts/deploy_app.py)."
            ) from None
    return checked_cases(input_folder, MODALITIES, dataset_convention(input_folder, "auto", MODALITIES))


class CaseLoaderOperator(Operator):
    """Emits the cases of a dataset folder (any layout the bundle reads), one per call, as 4-channel Images.

    Args:
        fragment: the application.
        cases: the checked cases of the input folder (:func:`check_inputs`).
    """

    def __init__(self, fragment, *args, cases: list[dict], **kwargs) -> None:
        self.cases = list(cases)
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
        loaded = self.load(case)
        image, present = loaded["image"], loaded["mask"].tolist()
        logging.info(f"{case_name(case)}: {tuple(image.shape)}")
        metadata = dict(image.meta, case=case_name(case), modalities_present=present)
        op_output.emit(Image(image.numpy(), metadata=metadata), "image")


class LabelWriterOperator(Operator):
    """Saves each label map it receives as NIfTI in the space of the image it was computed from.

    Args:
        fragment: the application.
        output_folder: where to write ``<case>_<first sequence>_seg.nii.gz`` and ``<case>_modalities.json``.
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
        atomic_save_nifti(nib.Nifti1Image(labels, np.asarray(meta["original_affine"], dtype=np.float64)), path)
        present = meta["modalities_present"]
        used = [m for m, here in zip(MODALITIES, present) if here]
        write_modalities_record(self.output_folder, meta["case"], used, [m for m in MODALITIES if m not in used])
        logging.info(f"wrote {path}")


class BundleInferenceOperator(MonaiBundleInferenceOperator):
    """MONAI Deploy's bundle operator, with the embedded inference.json's sidecar writing switched off and the
    model's preprocessing taken from the embedded metadata.

    inference.json's ``RecordModalitiesd`` would write into its own ``output_dir`` (relative to the
    current folder); the app's writer writes the sidecar beside the segmentation instead. inference.json reads the
    grid and window the model was trained on from ``models/model.pt``'s record, which a TorchScript file does not
    carry; metadata.json, embedded in it by ``ckpt_export``, holds the same record's copy (``lckd.preprocessing``).
    """

    def _get_compose(self, obj_name, disallowed_prefixes):
        if self._parser.get("output_dir") is not None:  # once: setting a key re-parses, making new transforms
            self._parser["output_dir"] = None
            metadata = self._parser.get("_meta_") or {}
            if not (metadata.get("lckd") or {}).get("preprocessing"):
                logging.warning(
                    "the model's metadata records no preprocessing (exported before models carried theirs): the "
                    "default grid (1 mm) and window (128^3) are used; export it again from a model trained since."
                )
            self._parser["model_preprocessing"] = model_preprocessing(None, metadata)
        return super()._get_compose(obj_name, disallowed_prefixes)


class LCKDSegmentationApp(Application):
    """Loader -> bundle inference (models/model.ts) -> NIfTI writer; paths from ``-i``, ``-o``, ``-m``."""

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        cases = check_inputs(Path(app_context.input_path), Path(app_context.model_path))
        loader = CaseLoaderOperator(self, cases=cases, name="loader")
        segment = BundleInferenceOperator(
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
    install_excepthook()
    LCKDSegmentationApp().run()
