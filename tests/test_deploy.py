"""MONAI Deploy: scripts/deploy_app.py runs MonaiBundleInferenceOperator on the bundle's TorchScript export.

monai-deploy-app-sdk and holoscan are installed without their dependencies (Makefile, pyproject's
``clients`` extra): their CUDA toolkits and tritonclient[all] are not needed to run on a CPU.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

import nibabel as nib
import numpy as np

from tests.conftest import BUNDLE_ROOT, NETWORK_KEYS, TinyDatasetTestCase, run_workflow, tiny_torchscript

MISSING = (
    ""
    if importlib.util.find_spec("holoscan")
    else "holoscan is not installed; `make install-clients` installs it in .venv-clients, where `make test` runs this file"
)


@unittest.skipIf(bool(MISSING), MISSING)
class TestDeployApp(TinyDatasetTestCase):
    def test_app_segments_like_the_bundle_where_no_case_has_a_sequence(self):
        with TemporaryDirectory() as tmp:
            root = Path(tmp)
            _, model = tiny_torchscript(root)
            cases = ["SYNTH_0000", "SYNTH_0001"]  # T1 missing; T1 and T2 missing: no case of the folder has T1
            for case in cases:
                shutil.copytree(self.dataset / case, root / "input" / case)
            (root / "input" / "SYNTH_0000" / "SYNTH_0000_t1.nii.gz").unlink()
            app = subprocess.run(
                [sys.executable, str(BUNDLE_ROOT / "scripts" / "deploy_app.py"),
                 "-m", str(model), "-i", str(root / "input"), "-o", str(root / "deployed")],
                cwd=root, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            self.assertEqual(app.returncode, 0, app.stdout[-3000:] + app.stderr[-3000:])
            self.assertIn("segmented from flair+t1ce (missing t1+t2)", app.stdout + app.stderr)
            self.assertIn("segmented from flair+t1ce+t2 (missing t1)", app.stdout + app.stderr)

            # the bundle's own inference.json with the same weights and the embedded (default) inferer
            run_workflow(
                "inference.json",
                dataset_dir=str(root / "input"),
                ckpt_path=str(root / "model.pt"),
                output_dir=str(root / "bundle"),
                num_workers=0,
                **NETWORK_KEYS,
            )
            for case in cases:
                deployed = nib.load(root / "deployed" / f"{case}_flair_seg.nii.gz")
                own = nib.load(root / "bundle" / f"{case}_flair_seg.nii.gz")
                source = nib.load(self.dataset / case / f"{case}_flair.nii.gz")
                self.assertEqual(deployed.shape, source.shape)
                np.testing.assert_allclose(deployed.affine, source.affine, atol=1e-5)
                labels = np.asarray(deployed.dataobj)
                self.assertTrue(set(np.unique(labels).tolist()) <= {0, 1, 2, 4})
                # TorchScript and eager agree to ~1e-6; a voxel at the 0.5 threshold may flip
                self.assertLess(float(np.mean(labels != np.asarray(own.dataobj))), 1e-3, case)
