"""Every bad input gets one clear InputError naming the file or key and the fix.

Each case builds its bad input in a fresh copy of a tiny synthetic dataset (three 16^3 cases in the
BraTS 2018-2021 layout) and calls what a workflow calls first: ``load_datalist`` +
``check_dataset``, ``check_settings``, the network, the loss, the checkpoint I/O.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import subprocess
import tempfile
import unittest
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pytest
import torch
from parameterized import parameterized

from bundle.conventions import DEFAULT_MODALITIES, check_modalities, combination_masks, label_regions
from bundle.data import check_dataset, dataset_convention, load_datalist, make_dataset
from bundle.errors import InputError, InputFileError, input_error_of
from bundle.handlers import AtomicDiskSaver, resume_from_latest
from bundle.losses import LCKDLoss
from bundle.metadata import read_metadata, read_teachers
from bundle.metrics.combinations import case_combination_metrics
from bundle.networks import LCKDNet, load_checkpoint, load_network
from bundle.settings import check_settings, check_writable
from bundle.transforms import PredictionToLabelsd, StackModalitiesd
from tests.helpers import NETWORK_KEYS, monai_bundle

SIZE = 16
CASE = "SYNTH_0000"


def _file(root: Path, key: str, case: str = CASE) -> Path:
    return root / case / f"{case}_{key}.nii.gz"


def _rewrite(root: Path, key: str, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Replace one file of the first case with ``data`` (and ``affine``, default the original's)."""
    path = _file(root, key)
    original = nib.load(path)
    nib.save(nib.Nifti1Image(data, original.affine if affine is None else affine), path)
    return path


def _volume(root: Path, key: str) -> np.ndarray:
    return np.asanyarray(nib.load(_file(root, key)).dataobj).copy()


def _check(root: Path, modalities=DEFAULT_MODALITIES) -> None:
    """What train.json does with a dataset before training."""
    datalist = load_datalist(root, modalities=modalities, val_fraction=0.34)
    check_dataset(datalist, modalities, dataset_convention(root, "auto", modalities), for_training=True)


def _shifted_affine(root: Path, key: str, shift: float) -> np.ndarray:
    affine = nib.load(_file(root, key)).affine.copy()
    affine[0, 3] += shift
    return affine


def _msd(root: Path, channels: int) -> Path:
    msd = root.parent / "msd"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "labelsTr").mkdir()
    image = np.random.default_rng(0).random((SIZE, SIZE, SIZE, channels)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), msd / "imagesTr" / "BRATS_001.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((SIZE,) * 3, np.uint8), np.eye(4)), msd / "labelsTr" / "BRATS_001.nii.gz")
    index = {"training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}] * 3}
    (msd / "dataset.json").write_text(json.dumps(index))
    return msd


def _tiny_net(modalities=DEFAULT_MODALITIES, filters=NETWORK_KEYS["filters"]) -> LCKDNet:
    return LCKDNet(
        modalities, filters=list(filters), kernel_size=NETWORK_KEYS["kernel_size"], strides=NETWORK_KEYS["strides"]
    )


def _write_metadata(root: Path, teachers: dict) -> Path:
    path = root / "metadata.json"
    path.write_text(json.dumps({"version": "0.1.0", "lckd": {"teachers": teachers}}))
    return path


def _lying_header(path: Path) -> Path:
    """Rewrite ``path`` whole, but with a header claiming twice the slices its data holds."""
    image = nib.load(path)
    data = np.asanyarray(image.dataobj)
    header = image.header.copy()
    header.set_data_shape((*data.shape[:2], data.shape[2] * 2))
    offset = int(header["vox_offset"])
    raw = header.binaryblock + b"\0" * (offset - len(header.binaryblock)) + data.tobytes(order="F")
    path.write_bytes(gzip.compress(raw))
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _disk_full(root: Path) -> None:
    saver = AtomicDiskSaver(root / "models")
    saver({"model": {"w": torch.ones(2)}}, "latest_checkpoint_epoch=1.pt")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with mock.patch("torch.save", no_space):
        try:
            saver({"model": {"w": torch.zeros(2)}}, "latest_checkpoint_epoch=2.pt")
        finally:
            # the previous checkpoint is intact and no temporary file is left behind
            assert torch.equal(
                load_checkpoint(root / "models" / "latest_checkpoint_epoch=1.pt")["model"]["w"], torch.ones(2)
            )
            assert sorted(p.name for p in (root / "models").iterdir()) == ["latest_checkpoint_epoch=1.pt"]


def _save_non_finite_weights(root: Path) -> None:
    saver = AtomicDiskSaver(root / "models")
    saver({"model": {"w": torch.ones(2)}}, "latest_checkpoint_epoch=1.pt")
    try:
        saver({"model": {"w": torch.tensor([1.0, float("nan")])}}, "latest_checkpoint_epoch=2.pt")
    finally:
        assert sorted(p.name for p in (root / "models").iterdir()) == ["latest_checkpoint_epoch=1.pt"]


def _resume_other_model(root: Path) -> None:
    (root / "models").mkdir()
    torch.save(
        {"model": _tiny_net(filters=(4, 8, 16, 64)).state_dict()}, root / "models" / "latest_checkpoint_epoch=3.pt"
    )
    net = _tiny_net()
    resume_from_latest(mock.MagicMock(), root / "models", {"model": net})


def _patch_header(path: Path, **fields) -> Path:
    """Rewrite header fields of a .nii.gz in place, leaving the voxel bytes as they are (a lying header)."""
    raw = gzip.decompress(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    for name, value in fields.items():
        header[name] = value
    path.write_bytes(gzip.compress(header.binaryblock + raw[header.sizeof_hdr :]))
    return path


def _claims_2000_cubed(root: Path) -> None:
    dim = nib.load(_file(root, "t1")).header["dim"].copy()
    dim[1:4] = 2000
    _patch_header(_file(root, "t1"), dim=dim)
    _check(root)


def _zero_affine(root: Path) -> None:
    _patch_header(
        _file(root, "t2"), srow_x=np.zeros(4), srow_y=np.zeros(4), srow_z=np.zeros(4), sform_code=1, qform_code=0
    )
    _check(root)


def _not_a_file(root: Path, kind: str) -> None:
    path = _file(root, "t1ce")
    path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "dangling symlink":
        path.symlink_to(root / "gone.nii.gz")
    else:
        path.symlink_to(path)
    _check(root)


def _rewrite_datalist(root: Path, change: Callable[[dict], object]) -> None:
    load_datalist(root, val_fraction=0.34)
    stored = json.loads((root / "datalist.json").read_text())
    changed = change(stored)
    stored = stored if changed is None else changed
    (root / "datalist.json").write_text(json.dumps(stored))
    _check(root)


def _case_in_two_splits(stored: dict) -> None:
    stored["validation"].append(stored["training"][0])


def _datalist_other_modalities(root: Path) -> None:
    load_datalist(root, modalities=DEFAULT_MODALITIES, val_fraction=0.34)
    load_datalist(root, modalities=["flair", "t1ce"], val_fraction=0.34)


def _datalist_missing_file(root: Path) -> None:
    load_datalist(root, val_fraction=0.34)
    _file(root, "t2", "SYNTH_0002").unlink()
    _check(root)


def _empty_dir(root: Path) -> None:
    empty = root.parent / "empty"
    empty.mkdir()
    _check(empty)


def _no_layout(root: Path) -> None:
    other = root.parent / "other"
    (other / "scans").mkdir(parents=True)
    (other / "scans" / "brain.nii.gz").write_bytes(b"")
    _check(other)


def _only_label(root: Path) -> None:
    for key in DEFAULT_MODALITIES:
        _file(root, key).unlink()
    _check(root)


def _no_label(root: Path) -> None:
    for case in ("SYNTH_0000", "SYNTH_0001", "SYNTH_0002"):
        _file(root, "seg", case).unlink()
    _check(root)


# (name, make the bad input and run the check, regex the message must match)
CASES: list[tuple[str, Callable[[Path], object], str]] = [
    ("dataset_dir_missing", lambda root: _check(root.parent / "nowhere"), r"does not exist.*lckd-make-synthetic"),
    ("dataset_dir_empty", _empty_dir, r"is empty"),
    ("no_recognisable_layout", _no_layout, r"matches a known layout"),
    ("unknown_dataset_format", lambda root: dataset_convention(root, "brats2019"), r"dataset_format must be"),
    ("case_with_every_modality_missing", _only_label, r"has no modality file.*move the folder out of dataset_dir"),
    (
        "unknown_modality_in_config",
        lambda root: _check(root, ["flair", "t1", "t1ce", "dwi"]),
        r"\['dwi'\] have no file",
    ),
    ("duplicate_modality", lambda root: check_modalities(["flair", "t1", "flair"]), r"unique.*duplicate \['flair'\]"),
    (
        "modalities_of_different_shapes",
        lambda root: (_rewrite(root, "t1", np.ones((SIZE, SIZE, SIZE - 4), np.float32)), _check(root)),
        r"SYNTH_0000_t1.nii.gz \(t1\) has shape \[16, 16, 12\].*co-registered",
    ),
    (
        "affines_beyond_tolerance",
        lambda root: (_rewrite(root, "t2", _volume(root, "t2"), _shifted_affine(root, "t2", 2.0)), _check(root)),
        r"SYNTH_0000_t2.nii.gz \(t2\) has an affine that differs .* by up to 2 .*affine_tolerance",
    ),
    (
        "nan_voxels",
        lambda root: (
            _rewrite(root, "flair", np.where(_volume(root, "flair") > 0.5, np.nan, 1.0).astype(np.float32)),
            _check(root),
        ),
        r"SYNTH_0000_flair.nii.gz has \d+ NaN",
    ),
    (
        "inf_voxels",
        lambda root: (_rewrite(root, "t1ce", np.full((SIZE,) * 3, np.inf, np.float32)), _check(root)),
        r"SYNTH_0000_t1ce.nii.gz has 0 NaN and 4096 infinite",
    ),
    (
        "all_zero_image",
        lambda root: (_rewrite(root, "t2", np.zeros((SIZE,) * 3, np.float32)), _check(root)),
        r"SYNTH_0000_t2.nii.gz is all zero.*delete it",
    ),
    (
        "4d_image_where_3d_expected",
        lambda root: (_rewrite(root, "t1", np.ones((SIZE, SIZE, SIZE, 2), np.float32)), _check(root)),
        r"SYNTH_0000_t1.nii.gz is a 4D image holding 2 volumes, of shape \[16, 16, 16, 2\].*MSD layout",
    ),
    (
        "msd_4d_with_wrong_channel_count",
        lambda root: _check(_msd(root, 3)),
        r"BRATS_001.nii.gz has shape \[16, 16, 16, 3\].*4D \(X, Y, Z, 4\)",
    ),
    (
        "2d_image",
        lambda root: (_rewrite(root, "flair", np.ones((SIZE, SIZE), np.float32)), _check(root)),
        r"SYNTH_0000_flair.nii.gz is a 2D image \(a single slice\), of shape \[16, 16\]",
    ),
    (
        "5d_image_with_singleton_axes",
        lambda root: (_rewrite(root, "flair", np.ones((SIZE, SIZE, SIZE, 1, 1), np.float32)), _check(root)),
        r"SYNTH_0000_flair.nii.gz is a 5D image holding 1 volume, of shape \[16, 16, 16, 1, 1\]",
    ),
    (
        "5d_image_with_two_volumes",
        lambda root: (_rewrite(root, "flair", np.ones((SIZE, SIZE, SIZE, 1, 2), np.float32)), _check(root)),
        r"SYNTH_0000_flair.nii.gz is a 5D image holding 2 volumes, of shape \[16, 16, 16, 1, 2\]",
    ),
    (
        "first_sequence_header_claims_more_voxels_than_the_file_holds",
        lambda root: (_lying_header(_file(root, "flair")), _check(root)),
        r"(?s)^(?!.*co-registered)(?!.*has shape).*SYNTH_0000_flair\.nii\.gz is truncated or corrupt",
    ),
    (
        "later_sequence_header_claims_more_voxels_than_the_file_holds",
        lambda root: (_lying_header(_file(root, "t2")), _check(root)),
        r"(?s)^(?!.*co-registered)(?!.*has shape).*SYNTH_0000_t2\.nii\.gz is truncated or corrupt",
    ),
    (
        "dataset_dir_is_a_file",
        lambda root: _check(_file(root, "flair")),
        r"dataset_dir .*SYNTH_0000_flair.nii.gz is a file, not a folder",
    ),
    (
        "truncated_nifti",
        lambda root: (_truncate(_file(root, "t1ce")), _check(root)),
        r"SYNTH_0000_t1ce.nii.gz is (truncated or corrupt|not a readable NIfTI)",
    ),
    (
        "non_nifti_with_nii_gz_name",
        lambda root: (_file(root, "t2").write_bytes(gzip.compress(b"patient notes, not an image")), _check(root)),
        r"SYNTH_0000_t2.nii.gz is not a readable NIfTI image.*re-export",
    ),
    (
        "label_values_outside_convention",
        lambda root: (
            _rewrite(root, "seg", np.where(_volume(root, "seg") == 4, 3, _volume(root, "seg")).astype(np.uint8)),
            _check(root),
        ),
        r"SYNTH_0000_seg.nii.gz holds label values \[3\] outside the dataset's convention \[0, 1, 2, 4\]",
    ),
    (
        "label_shape_differs_from_image",
        lambda root: (_rewrite(root, "seg", np.zeros((SIZE, SIZE, 8), np.uint8)), _check(root)),
        r"SYNTH_0000_seg.nii.gz \(label\) has shape \[16, 16, 8\]",
    ),
    ("training_case_without_label", _no_label, r"has no label file"),
    (
        "absurd_intensities_that_pass_a_nan_check",
        lambda root: (
            _rewrite(
                root, "flair", np.where(np.arange(SIZE**3).reshape((SIZE,) * 3) < 2, 3e38, 1.0).astype(np.float32)
            ),
            _check(root),
        ),
        r"SYNTH_0000_flair.nii.gz has 2 voxels beyond \+-1e\+07 \(largest 3e\+38\)",
    ),
    (
        "rgb_image",
        lambda root: (
            _rewrite(root, "t1", np.zeros((SIZE,) * 3, [("R", "u1"), ("G", "u1"), ("B", "u1")])),
            _check(root),
        ),
        r"SYNTH_0000_t1.nii.gz holds RGB voxels, not one grey value",
    ),
    (
        "complex_image",
        lambda root: (_rewrite(root, "t1", _volume(root, "t1").astype(np.complex64)), _check(root)),
        r"SYNTH_0000_t1.nii.gz holds complex64 voxels",
    ),
    (
        "header_claims_2000_cubed_voxels",
        _claims_2000_cubed,
        r"is \[2000, 2000, 2000\] voxels .* GB per case, more than 25%",
    ),
    (
        "voxels_of_20_mm",
        lambda root: (_rewrite(root, "t1", _volume(root, "t1"), np.diag([20.0, 20.0, 20.0, 1.0])), _check(root)),
        r"SYNTH_0000_t1.nii.gz has voxel sizes \[20.0, 20.0, 20.0\] mm .*header's affine is wrong",
    ),
    ("zero_affine", _zero_affine, r"SYNTH_0000_t2.nii.gz has voxel sizes \[0.0, 0.0, 0.0\] mm"),
    (
        "sequence_name_is_a_folder",
        lambda root: _not_a_file(root, "folder"),
        r"t1ce.nii.gz is a folder, not a file; only an absent",
    ),
    (
        "sequence_is_a_dangling_symlink",
        lambda root: _not_a_file(root, "dangling symlink"),
        r"t1ce.nii.gz is a dangling symlink \(to .*gone.nii.gz\); only an absent file means a missing sequence",
    ),
    ("sequence_is_a_symlink_loop", lambda root: _not_a_file(root, "loop"), r"t1ce.nii.gz is a symlink loop"),
    (
        "datalist_is_a_list",
        lambda root: _rewrite_datalist(root, lambda stored: []),
        r"datalist.json holds a JSON list, not an object",
    ),
    (
        "datalist_split_is_a_string",
        lambda root: _rewrite_datalist(root, lambda stored: {**stored, "training": "all"}),
        r"datalist.json: \"training\" must be a list of case objects, got \"all\"",
    ),
    (
        "case_in_two_splits",
        lambda root: _rewrite_datalist(root, _case_in_two_splits),
        r"datalist.json puts cases in two splits: SYNTH_\d+ \(training and validation\)",
    ),
    (
        "empty_training_list",
        lambda root: _rewrite_datalist(root, lambda stored: {**stored, "training": []}),
        r"the training split is empty, so training has nothing to train on",
    ),
    (
        "no_validation_case",
        lambda root: check_dataset(
            load_datalist(root, val_fraction=0.0), DEFAULT_MODALITIES, "brats2021", for_training=True
        ),
        r"the validation split is empty, so training has nothing to validate and elect teachers on; set val_fraction > 0",
    ),
    (
        "msd_entry_without_label",
        lambda root: (
            (_msd(root, 4) / "dataset.json").write_text(
                json.dumps({"training": [{"image": "./imagesTr/BRATS_001.nii.gz"}]})
            ),
            _check(root.parent / "msd"),
        ),
        r"dataset.json has a training entry without an image and a label",
    ),
    (
        "metadata_is_a_list",
        lambda root: (
            (root / "metadata.json").write_text("[]"),
            read_teachers(root / "metadata.json", DEFAULT_MODALITIES),
        ),
        r"metadata.json must be a JSON object",
    ),
    (
        "patch_size_not_divisible_by_strides",
        lambda root: check_settings({"patch_size": [96, 100, 96], "strides": [1, 2, 2, 2, 2]}),
        r"axis 1 by 16.*e\.g\. 96 or 112",
    ),
    (
        "patch_size_not_three_ints",
        lambda root: check_settings({"patch_size": [128, 128], "strides": [1, 2]}),
        r"--patch_size must be a list of 3 whole numbers >= 1.*got \[128, 128\]",
    ),
    (
        "batch_size_below_1",
        lambda root: check_settings({"batch_size": 0}),
        r"--batch_size must be a whole number >= 1; got 0",
    ),
    (
        "max_epochs_before_elect_epoch",
        lambda root: check_settings({"max_epochs": 10, "elect_epoch": 50}),
        r"elect_epoch=50 is after the last epoch \(max_epochs=10\)",
    ),
    (
        "negative_ckd_weight",
        lambda root: check_settings({"ckd_weight": -0.1}),
        r"--ckd_weight must be a number >= 0 \(0 turns distillation off\); got -0.1",
    ),
    ("negative_ckd_weight_in_loss", lambda root: LCKDLoss(ckd_weight=-1.0), r"ckd_weight must be a number >= 0"),
    (
        "teachers_in_metadata_name_a_modality_the_model_lacks",
        lambda root: read_teachers(
            _write_metadata(root, {"ET": "dwi", "TC": "t1ce", "WT": "flair"}), DEFAULT_MODALITIES
        ),
        r"metadata.json records teachers .*'ET': 'dwi'.*Re-elect",
    ),
    (
        "checkpoint_of_other_modalities",
        lambda root: (
            torch.save({"model": _tiny_net(["flair", "t1ce"]).state_dict()}, root / "m.pt"),
            load_network(_tiny_net(), root / "m.pt"),
        ),
        r"these weights were trained with modalities=\['flair', 't1ce'\] but the network is built with modalities=",
    ),
    (
        "checkpoint_of_other_filters",
        lambda root: (
            torch.save({"model": _tiny_net(filters=(8, 8, 16, 32)).state_dict()}, root / "m.pt"),
            load_network(_tiny_net(), root / "m.pt"),
        ),
        r"trained with filters=\[8, 8, 16, 32\] but the network is built with filters=\[4, 8, 16, 32\]",
    ),
    (
        "checkpoint_missing",
        lambda root: load_network(_tiny_net(), root / "models" / "model.pt"),
        r"model.pt does not exist; train first",
    ),
    (
        "checkpoint_truncated",
        lambda root: (
            torch.save({"model": _tiny_net().state_dict()}, root / "m.pt"),
            _truncate(root / "m.pt"),
            load_checkpoint(root / "m.pt"),
        ),
        r"m.pt is not a readable PyTorch checkpoint",
    ),
    ("resume_from_checkpoint_of_other_model", _resume_other_model, r"written by a different model.*--resume false"),
    (
        "output_dir_not_writable",
        lambda root: check_writable(_file(root, "seg") / "eval"),
        r"cannot write to .*SYNTH_0000_seg.nii.gz/eval",
    ),
    (
        "disk_full_while_writing_checkpoint",
        _disk_full,
        r"could not write checkpoint .*epoch=2.pt \(No space left on device\); the previous checkpoint is kept",
    ),
    (
        "truncated_checkpoint_loaded_into_the_network",
        lambda root: (
            torch.save({"model": _tiny_net().state_dict()}, root / "m.pt"),
            _truncate(root / "m.pt"),
            load_network(_tiny_net(), root / "m.pt"),  # what inference.json's network does
        ),
        r"m.pt is not a readable PyTorch checkpoint \(\w+Error: .*\); it is truncated or not a checkpoint",
    ),
    (
        "metadata_missing",
        lambda root: read_teachers(root / "nowhere.json", DEFAULT_MODALITIES),
        r"nowhere.json does not exist; restore the bundle's configs/metadata.json",
    ),
    (
        "metadata_read_only",
        lambda root: (
            _write_metadata(root, {}),
            mock.patch("os.access", return_value=False).start(),
            read_metadata(root / "metadata.json", writable=True),
        ),
        r"metadata.json is read-only, but the teacher election writes the teacher set into it",
    ),
    (
        "non_finite_weights_are_never_saved",
        _save_non_finite_weights,
        r"refusing to write .*epoch=2.pt: 1 weight tensors of the model hold NaN or Inf \(e.g. w\); the previous",
    ),
    (
        "datalist_names_missing_files",
        _datalist_missing_file,
        r"names .*SYNTH_0002_t2.nii.gz .*does not exist.*delete .*datalist.json",
    ),
    (
        "datalist_malformed",
        lambda root: ((root / "datalist.json").write_text("{'training': ["), _check(root)),
        r"datalist.json is not valid JSON",
    ),
    (
        "datalist_made_for_other_modalities",
        _datalist_other_modalities,
        r"was made for modalities .*delete .*datalist.json",
    ),
    (
        "forward_mask_with_no_modality",
        lambda root: _tiny_net().eval()(
            torch.ones(2, 4, SIZE, SIZE, SIZE), torch.tensor([[True, False, False, False], [False] * 4])
        ),
        r"needs at least one present modality.*mask row with none",
    ),
    (
        "inference_input_with_no_modality",
        lambda root: StackModalitiesd(DEFAULT_MODALITIES)({"label": torch.zeros(1, SIZE, SIZE, SIZE)}),
        r"no modality image in the data",
    ),
]


class TestBadInputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._template = tempfile.TemporaryDirectory()
        make_dataset(Path(cls._template.name) / "data", cases=3, size=SIZE, seed=0)

    @classmethod
    def tearDownClass(cls):
        cls._template.cleanup()

    def setUp(self):
        work = tempfile.TemporaryDirectory()
        self.addCleanup(work.cleanup)
        self.addCleanup(mock.patch.stopall)  # cases that patch with .start()
        self.root = Path(work.name) / "data"
        subprocess.run(["cp", "-r", str(Path(self._template.name) / "data"), str(self.root)], check=True)

    def test_the_tiny_dataset_passes(self):
        _check(self.root)

    @parameterized.expand(CASES)
    def test_clear_error(self, _, make_and_check, message):
        with self.assertRaisesRegex(InputError, message) as caught:
            make_and_check(self.root)
        self.assertGreater(len(str(caught.exception)), 30)

    def test_missing_paths_are_also_file_not_found_errors(self):
        with self.assertRaises(FileNotFoundError) as caught:
            _check(self.root.parent / "nowhere")
        self.assertIsInstance(caught.exception, InputFileError)

    def test_affine_within_tolerance_and_empty_label_pass(self):
        _rewrite(self.root, "t2", _volume(self.root, "t2"), _shifted_affine(self.root, "t2", 1e-5))
        _rewrite(self.root, "seg", np.zeros((SIZE,) * 3, np.uint8))
        _check(self.root)

    def test_every_problem_is_listed_at_once(self):
        _rewrite(self.root, "t2", np.zeros((SIZE,) * 3, np.float32))
        _truncate(_file(self.root, "t1", "SYNTH_0001"))
        with self.assertRaisesRegex(InputError, r"(?s)^2 problem\(s\)(?=.*SYNTH_0000_t2)(?=.*SYNTH_0001_t1)"):
            _check(self.root)

    def test_checked_files_are_cached_until_they_change(self):
        cache = self.root / "checked.json"
        datalist = load_datalist(self.root, val_fraction=0.34)
        check_dataset(datalist, DEFAULT_MODALITIES, "brats2021", cache_file=cache)
        self.assertEqual(len(json.loads(cache.read_text())), 15)
        with mock.patch("bundle.data.validation._check_voxels") as voxels:
            check_dataset(datalist, DEFAULT_MODALITIES, "brats2021", cache_file=cache)
            voxels.assert_not_called()
        _rewrite(self.root, "t1", np.zeros((SIZE,) * 3, np.float32))
        with self.assertRaisesRegex(InputError, "SYNTH_0000_t1.nii.gz is all zero"):
            check_dataset(datalist, DEFAULT_MODALITIES, "brats2021", cache_file=cache)

    def test_a_file_rewritten_with_its_size_and_mtime_restored_is_checked_again(self):
        cache = self.root / "checked.json"
        datalist = load_datalist(self.root, val_fraction=0.34)
        check_dataset(datalist, DEFAULT_MODALITIES, "brats2021", cache_file=cache)
        path = _file(self.root, "t1")
        before = path.stat()
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        self.assertEqual((path.stat().st_size, path.stat().st_mtime_ns), (before.st_size, before.st_mtime_ns))
        with self.assertRaisesRegex(InputError, "SYNTH_0000_t1.nii.gz is (truncated or corrupt|not a readable NIfTI)"):
            check_dataset(datalist, DEFAULT_MODALITIES, "brats2021", cache_file=cache)

    def test_empty_label_is_scored_as_brats_not_a_crash(self):
        net = _tiny_net().eval()
        batch = {
            "image": torch.randn(1, 4, SIZE, SIZE, SIZE),
            "label": torch.zeros(1, 1, SIZE, SIZE, SIZE),
            "mask": torch.ones(1, 4, dtype=torch.bool),
        }
        to_labels = PredictionToLabelsd("pred", transform=None)
        with torch.no_grad():
            metrics = case_combination_metrics(
                net, batch, lambda x, n, **kw: n(x, **kw), combination_masks(), to_labels, scoring="brats2023"
            )
            predicted = label_regions(to_labels({"pred": net(batch["image"])[0]})["pred"])
        self.assertEqual(tuple(metrics["dice"].shape), (15, 3))
        # no tumour: Dice 1 where nothing is predicted, 0 (and the HD95 penalty) where something is
        nothing = torch.as_tensor(~predicted.reshape(3, -1).any(axis=1))
        self.assertEqual(metrics["dice"][-1].tolist(), nothing.float().tolist())
        self.assertTrue(set(metrics["dice"].flatten().tolist()) <= {0.0, 1.0})
        hd95 = metrics["hd95"]
        torch.testing.assert_close(hd95, torch.where(metrics["dice"] == 1.0, 0.0, 374.0))

    def test_input_error_is_found_behind_monai_wrappers(self):
        try:
            try:
                raise InputError("bad file x")
            except InputError as error:
                raise RuntimeError("Failed to evaluate ConfigExpression") from error
        except RuntimeError as wrapped:
            self.assertEqual(str(input_error_of(wrapped)), "bad file x")
        self.assertIsNone(input_error_of(RuntimeError("other")))


@pytest.mark.slow
class TestCommandLine(unittest.TestCase):
    def test_bad_dataset_dir_prints_one_line_not_a_traceback(self):
        with tempfile.TemporaryDirectory() as tmp:
            result = monai_bundle(
                "run",
                "--config_file",
                "configs/train.json",
                "--dataset_dir",
                f"{tmp}/nowhere",
                "--patch_size",
                "[64, 64, 64]",
                "--ckpt_dir",
                f"{tmp}/models",
                "--output_dir",
                f"{tmp}/eval",
                timeout=300,
            )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"error: dataset_dir {tmp}/nowhere does not exist", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
