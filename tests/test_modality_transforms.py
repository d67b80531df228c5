import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from parameterized import parameterized

from bundle.transforms import LoadSequencesd, StackModalitiesd

MODALITIES = ["flair", "t1", "t1ce", "t2"]


def volume(value: float, shape=(1, 4, 4, 4), name="x.nii.gz") -> MetaTensor:
    return MetaTensor(torch.full(shape, value), meta={"filename_or_obj": name})


class TestLoadSequencesd(unittest.TestCase):
    def test_loads_the_sequences_present_and_leaves_a_handed_over_image_alone(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "case_flair.nii.gz"
            nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.float32), np.eye(4)), path)
            load = LoadSequencesd(["flair", "t1"], ensure_channel_first=True, image_only=True)
            loaded = load({"flair": str(path)})
            self.assertEqual(tuple(loaded["flair"].shape), (1, 4, 5, 6))
            self.assertNotIn("t1", loaded)
            image = torch.zeros(4, 4, 5, 6)  # what MONAI Label and MONAI Deploy hand over
            self.assertIs(load({"image": image})["image"], image)


class TestStackModalitiesd(unittest.TestCase):
    def test_absent_keys_become_zero_channels(self):
        out = StackModalitiesd(MODALITIES)({"flair": volume(1.0), "t1ce": volume(3.0), "label": volume(0.0)})
        self.assertEqual(out["image"].shape, (4, 4, 4, 4))
        self.assertEqual(out["mask"].tolist(), [True, False, True, False])
        self.assertEqual(out["image"][:, 0, 0, 0].tolist(), [1.0, 0.0, 3.0, 0.0])
        self.assertNotIn("flair", out)
        self.assertIn("label", out)
        self.assertEqual(out["image"].meta["filename_or_obj"], "x.nii.gz")

    def test_four_channel_image_mask_from_zero_channels(self):
        image = torch.randn(4, 4, 4, 4)
        image[3] = 0
        out = StackModalitiesd(MODALITIES)({"image": image})
        self.assertEqual(out["mask"].tolist(), [True, True, True, False])
        self.assertIs(type(out["mask"]), torch.Tensor)

    @parameterized.expand(
        [
            ("shape_mismatch", {"flair": volume(1.0), "t1": volume(1.0, (1, 4, 4, 5), "t1.nii.gz")}, "co-registered"),
            ("four_d_modality", {"flair": volume(1.0, (2, 4, 4, 4), "f.nii.gz")}, "single 3D volume"),
            ("wrong_channels", {"image": torch.ones(3, 4, 4, 4)}, "expected 4 channels"),
        ]
    )
    def test_bad_inputs_are_explained(self, _, data, message):
        with self.assertRaisesRegex(ValueError, message):
            StackModalitiesd(MODALITIES)(data)

    @parameterized.expand(
        [
            ("per_sequence_files", {"flair": volume(1.0), "t1": volume(2.0), "t1ce": volume(3.0)}),
            ("four_channel_image", {"image": torch.arange(1.0, 5.0).reshape(4, 1, 1, 1).expand(4, 4, 4, 4)}),
        ]
    )
    def test_use_scores_one_combination(self, _, data):
        out = StackModalitiesd(MODALITIES, use=["t1", "t1ce"])(data)
        self.assertEqual(out["mask"].tolist(), [False, True, True, False])
        self.assertEqual(out["image"][:, 0, 0, 0].tolist(), [0.0, 2.0, 3.0, 0.0])

    def test_use_checked(self):
        with self.assertRaisesRegex(ValueError, r"subset of the model's modalities .* got \['adc'\]"):
            StackModalitiesd(MODALITIES, use=["adc"])
        with self.assertRaisesRegex(ValueError, "x.nii.gz: the case has none of the sequences to use \\['t2'\\]"):
            StackModalitiesd(MODALITIES, use=["t2"])({"flair": volume(1.0)})

    def test_no_image_at_all(self):
        with self.assertRaisesRegex(ValueError, "no modality image"):
            StackModalitiesd(MODALITIES)({"label": volume(0.0)})
