"""MONAI Deploy: scripts/deploy_app.py runs MonaiBundleInferenceOperator on the bundle's TorchScript export.

monai-deploy-app-sdk and holoscan are installed without their dependencies (Makefile, pyproject's
``clients`` extra): their CUDA toolkits and tritonclient[all] are not needed to run on a CPU.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

import nibabel as nib
import numpy as np
import pytest

from bundle.networks import PREPROCESSING_DEFAULTS
from tests.helpers import (
    BUNDLE_ROOT,
    NETWORK_KEYS,
    TinyDatasetTestCase,
    run_command,
    run_workflow,
    tiny_checkpoint,
    tiny_torchscript,
)

MISSING = (
    ""
    if importlib.util.find_spec("holoscan")
    else "holoscan is not installed; `make install-clients` installs it in .venv-clients, where `make test` runs this file"
)

pytestmark = pytest.mark.slow  # whole workflows or subprocesses: `make test-fast` leaves them out


@unittest.skipIf(bool(MISSING), MISSING)
class TestDeployApp(TinyDatasetTestCase):
    def test_app_segments_like_the_bundle_where_no_case_has_a_sequence(self):
        with TemporaryDirectory() as tmp:
            root = Path(tmp)
            # trained on a 2 mm grid with 16^3 patches: the app must take that from the embedded metadata
            _, model = tiny_torchscript(root, {**PREPROCESSING_DEFAULTS, "pixdim": [2.0] * 3, "patch_size": [16] * 3})
            # T1 missing; T1 and T2 missing: no case of the folder has T1. Names with dots must not collide.
            cases = {"Pat.00": "SYNTH_0000", "Pat.01": "SYNTH_0001"}
            for case, source in cases.items():
                for path in (self.dataset / source).iterdir():
                    target = root / "input" / case / path.name.replace(source, case)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target)
            (root / "input" / "Pat.00" / "Pat.00_t1.nii.gz").unlink()
            app = run_app(model, root / "input", root / "deployed", cwd=root)
            self.assertEqual(app.returncode, 0, app.stdout[-3000:] + app.stderr[-3000:])
            self.assertIn("segmented from flair+t1ce (missing t1+t2)", app.stdout + app.stderr)
            self.assertIn("segmented from flair+t1ce+t2 (missing t1)", app.stdout + app.stderr)
            # every output under the output folder, one segmentation and one sidecar per case
            self.assertEqual(
                sorted(p.name for p in root.iterdir()), ["deployed", "input", "metadata.json", "model.pt", "model.ts"]
            )
            self.assertEqual(
                sorted(p.name for p in (root / "deployed").iterdir()),
                [
                    "Pat.00_flair_seg.nii.gz",
                    "Pat.00_modalities.json",
                    "Pat.01_flair_seg.nii.gz",
                    "Pat.01_modalities.json",
                ],
            )
            sidecar = json.loads((root / "deployed" / "Pat.01_modalities.json").read_text())
            self.assertEqual(
                sidecar, {"case": "Pat.01", "modalities_used": ["flair", "t1ce"], "modalities_missing": ["t1", "t2"]}
            )

            # the bundle's own inference.json with the same weights and the embedded (default) inferer
            run_workflow(
                "inference.json",
                dataset_dir=str(root / "input"),
                ckpt_path=str(root / "model.pt"),
                output_dir=str(root / "bundle"),
                num_workers=0,
                **NETWORK_KEYS,
            )
            for case, source in cases.items():
                deployed = nib.load(root / "deployed" / f"{case}_flair_seg.nii.gz")
                own = nib.load(root / "bundle" / f"{case}_flair_seg.nii.gz")
                original = nib.load(self.dataset / source / f"{source}_flair.nii.gz")
                self.assertEqual(deployed.shape, original.shape)
                np.testing.assert_allclose(deployed.affine, original.affine, atol=1e-5)
                labels = np.asarray(deployed.dataobj)
                self.assertTrue(set(np.unique(labels).tolist()) <= {0, 1, 2, 4})
                # TorchScript and eager agree to ~1e-6; a voxel at the 0.5 threshold may flip
                self.assertLess(float(np.mean(labels != np.asarray(own.dataobj))), 1e-3, case)

    def test_app_checks_its_inputs_and_model_before_running(self):
        with TemporaryDirectory() as tmp:
            root = Path(tmp)
            _, model = tiny_torchscript(root)
            for case in ("SYNTH_0000", "SYNTH_0002"):
                shutil.copytree(self.dataset / case, root / "input" / case)
            nan_file = root / "input" / "SYNTH_0000" / "SYNTH_0000_t1.nii.gz"
            image = nib.load(nan_file)
            voxels = np.asarray(image.dataobj).astype(np.float32)
            voxels[3, 3, 3] = np.nan
            nib.save(nib.Nifti1Image(voxels, image.affine), nan_file)
            shifted_file = root / "input" / "SYNTH_0002" / "SYNTH_0002_t2.nii.gz"
            image = nib.load(shifted_file)
            affine = image.affine.copy()
            affine[0, 0], affine[0, 3] = -affine[0, 0], affine[0, 3] + 40  # flipped and shifted 40 mm
            nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), shifted_file)
            app = run_app(model, root / "input", root / "out", cwd=root)
            self.assertEqual(app.returncode, 1)
            self.assertRegex(app.stderr, r"error: 2 problem\(s\) in the dataset:\n.*SYNTH_0000_t1.nii.gz has 1 NaN")
            self.assertIn("SYNTH_0002_t2.nii.gz (t2) has an affine that differs", app.stderr)
            self.assertNotIn("Traceback", app.stdout + app.stderr)
            self.assertFalse((root / "out").exists() and any((root / "out").iterdir()))

            truncated = root / "truncated.ts"
            truncated.write_bytes(model.read_bytes()[:1000])
            shutil.rmtree(root / "input" / "SYNTH_0000")
            shutil.rmtree(root / "input" / "SYNTH_0002")
            shutil.copytree(self.dataset / "SYNTH_0003", root / "input" / "SYNTH_0003")
            app = run_app(truncated, root / "input", root / "out", cwd=root)
            self.assertEqual(app.returncode, 1)
            self.assertRegex(
                app.stderr, r"(?m)^error: .*truncated.ts is not a readable TorchScript model \(RuntimeError"
            )
            self.assertNotIn("Traceback", app.stdout + app.stderr)


@unittest.skipIf(bool(MISSING), MISSING)
class TestDeployDicomApp(unittest.TestCase):
    def test_a_dicom_study_gives_what_the_clinical_command_gives_and_a_seg(self):
        """scripts/deploy_dicom_app.py on a phantom study without T1: the label map python -m bundle.clinical writes,
        and Deploy's DICOM SEG of it, one segment per class, referencing the T1ce series."""
        import highdicom
        import pydicom
        import SimpleITK as sitk

        from bundle.clinical.series import find_series, slice_order
        from bundle.clinical.studies import make_study

        with TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_study(
                root / "study",
                seed=6,
                sequences=["flair", "t1ce", "t2"],
                spacing=3.0,
                coarsen=3.0,
                vendor="GE MEDICAL SYSTEMS",
            )
            tiny_checkpoint(root / "model.pt", {**PREPROCESSING_DEFAULTS, "pixdim": [3.0] * 3, "patch_size": [32] * 3})
            study, model = root / "study" / "dicom", root / "model.pt"
            script = BUNDLE_ROOT / "scripts" / "deploy_dicom_app.py"
            app = run_command([sys.executable, script, "-m", model, "-i", study, "-o", root / "deployed"], cwd=root)
            self.assertEqual(app.returncode, 0, app.stdout[-3000:] + app.stderr[-3000:])
            command = run_command(
                [sys.executable, "-m", "bundle.clinical", study, "--output", root / "command", "--ckpt_path", model]
            )
            self.assertEqual(command.returncode, 0, command.stderr[-3000:])
            (study_folder,) = [p for p in (root / "deployed").iterdir() if p.is_dir()]
            (seg_file,) = (root / "deployed").glob("*.dcm")
            deployed = sitk.GetArrayFromImage(sitk.ReadImage(str(study_folder / "segmentation_t1ce_grid.nii.gz")))
            own = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "command" / "segmentation_t1ce_grid.nii.gz")))
            self.assertTrue((own > 0).any())
            # seeded registrations, the same brain mask; ITK's threads still move the last float digits, and the atlas
            # alignment's optimiser then ends 1e-4 rad and a few um apart: 128 voxels of 428,800 differ (measured; two
            # runs of the command alone differ by 129)
            self.assertLess(float(np.mean(deployed != own)), 1e-3)
            self.assertFalse((study_folder / "segmentation.dcm").exists())  # Deploy's writer writes the SEG
            t1ce = next(s for s in find_series(root / "study" / "dicom") if s.contrast_agent)
            seg = highdicom.seg.segread(seg_file)
            self.assertEqual(seg.ReferencedSeriesSequence[0].SeriesInstanceUID, t1ce.uid)
            self.assertEqual(
                [s.SegmentLabel for s in seg.SegmentSequence],
                ["NCR: necrotic tumour core", "ED: peritumoral oedema", "ET: enhancing tumour"],
            )
            slices = [pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in slice_order(t1ce)]
            masks = seg.get_pixels_by_source_instance(slices, segment_numbers=[1, 2, 3])
            for index, value in enumerate((1, 2, 4)):
                np.testing.assert_array_equal(masks[..., index].astype(bool), deployed == value)


def run_app(model: Path, input_folder: Path, output_folder: Path, cwd: Path) -> subprocess.CompletedProcess:
    """scripts/deploy_app.py as a user runs it."""
    return run_command(
        [
            sys.executable,
            BUNDLE_ROOT / "scripts" / "deploy_app.py",
            "-m",
            model,
            "-i",
            input_folder,
            "-o",
            output_folder,
        ],
        cwd=cwd,
    )
