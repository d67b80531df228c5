"""The bundle as a model of MONAI Label's ``monaibundle`` app: the real BundleTrainTask and BundleInferTask.

monailabel is installed without its dependencies (Makefile, pyproject's ``clients`` extra): it requires
torchvision, which has no CPU build here and would replace torch with a CUDA build. monailabel imports
torchvision in one place, ``monailabel/transform/post.py`` (``make_grid``, ``save_image``, for 2D
overlays), which bundle tasks never call; :func:`stand_in_torchvision` stands in for that import only.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from bundle.networks import CaseMaskInferer
from tests.helpers import CONFIGS, TINY_OVERRIDES, TinyDatasetTestCase, fresh_metadata, run_workflow, stacked_case

pytestmark = pytest.mark.slow  # whole workflows or subprocesses: `make test-fast` leaves them out


def stand_in_torchvision() -> None:
    """Provide ``torchvision.utils`` (make_grid, save_image) when torchvision is not installed; calling them fails."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("torchvision is not installed; this stand-in only satisfies monailabel's import")

    utils = types.ModuleType("torchvision.utils")
    utils.make_grid = utils.save_image = unavailable
    torchvision = types.ModuleType("torchvision")
    torchvision.utils = utils
    sys.modules.update({"torchvision": torchvision, "torchvision.utils": utils})


try:
    stand_in_torchvision()
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.train.bundle import BundleTrainTask
except ImportError as error:  # pragma: no cover - make install provides monailabel
    LocalDatastore = BundleInferTask = BundleTrainTask = None
    MISSING = f"monailabel is not installed ({error}); `make install-clients` installs it in .venv-clients, where `make test` runs this file"
else:
    MISSING = ""

# the bundle's own settings keys a MONAI Label user edits in configs/*.json; tiny here
LABEL_SETTINGS = {**TINY_OVERRIDES, "val_interval": 1, "elect_epoch": 1}


def label_bundle(root: Path) -> Path:
    """A bundle folder as MONAI Label serves it (``<app>/model/<bundle>``): this bundle's configs, tiny settings."""
    bundle = root / "lckd_brats"
    shutil.copytree(CONFIGS, bundle / "configs")
    fresh_metadata(bundle / "configs")
    (bundle / "models").mkdir()
    for name in ("train.json", "inference.json"):
        path = bundle / "configs" / name
        config = json.loads(path.read_text())
        config.update({key: value for key, value in LABEL_SETTINGS.items() if key in config})
        path.write_text(json.dumps(config, indent=4))
    return bundle


def label_datastore(dataset: Path, root: Path) -> Path:
    """A MONAI Label datastore of the tiny dataset: 4-channel images, final labels in labels/final."""
    store = root / "datastore"
    (store / "labels" / "final").mkdir(parents=True)
    for case in sorted(dataset.glob("SYNTH_*")):
        image, affine = stacked_case(case)
        nib.save(nib.Nifti1Image(image, affine), store / f"{case.name}.nii.gz")
        shutil.copy(case / f"{case.name}_seg.nii.gz", store / "labels" / "final" / f"{case.name}.nii.gz")
    return store


@unittest.skipIf(bool(MISSING), MISSING)
class TestMonaiLabel(TinyDatasetTestCase):
    def test_train_then_infer_with_a_missing_sequence(self):
        with TemporaryDirectory() as tmp:
            root = Path(tmp)
            bundle = label_bundle(root)
            store = LocalDatastore(str(label_datastore(self.dataset, root)), extensions=["*.nii.gz"], auto_reload=False)
            self.assertEqual(len(store.datalist()), 8)

            trainer = BundleTrainTask(str(bundle), {})
            self.assertTrue(trainer.is_valid())
            request = {"model": "lckd_brats", "max_epochs": 2, "val_split": 0.25, "device": "cpu", "multi_gpu": False}
            trainer(request, store)
            self.assertTrue((bundle / "models" / "model.pt").is_file())
            teachers = json.loads((bundle / "configs" / "metadata.json").read_text())["lckd"]["teachers"]
            self.assertEqual(set(teachers), {"ET", "TC", "WT"})

            infer = BundleInferTask(str(bundle), {})
            self.assertTrue(infer.is_valid())
            self.assertEqual(infer.key_image, "image")
            self.assertIsInstance(infer.inferer(), CaseMaskInferer)  # one mask per case, not per window
            case = "SYNTH_0001"  # lacks T1 and T2: zero channels in the 4-channel image
            result_file, result = infer({"image": str(store.get_image_uri(case)), "device": "cpu"})
            label = nib.load(result_file)
            source = nib.load(store.get_image_uri(case))
            self.assertEqual(label.shape, source.shape[:3])
            np.testing.assert_allclose(label.affine, source.affine, atol=1e-5)
            values = set(np.unique(np.asarray(label.dataobj)).tolist())
            self.assertTrue(values <= {0, 1, 2, 4}, values)  # written in the BraTS 2018-2021 convention
            sidecar = json.loads((bundle / "eval" / "segmentations" / f"{case}_modalities.json").read_text())
            self.assertEqual(sidecar["modalities_missing"], ["t1", "t2"])

            # the same model through the bundle's own inference.json, from the per-sequence files
            run_workflow(
                [str(bundle / "configs" / "inference.json")],
                ckpt_path=str(bundle / "models" / "model.pt"),
                dataset_dir=str(self.dataset),
                output_dir=str(root / "own"),
            )
            own = nib.load(root / "own" / f"{case}_flair_seg.nii.gz")
            np.testing.assert_array_equal(np.asarray(label.dataobj), np.asarray(own.dataobj))
