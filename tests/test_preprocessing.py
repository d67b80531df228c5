"""One preprocessing for training, validation and inference (bundle/transforms/preprocessing.py)."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Compose, RandFlipd

from bundle.data import cached_dataset, discover_cases
from bundle.errors import InputError
from bundle.transforms import case_preprocessing

MODALITIES = ["flair", "t1", "t1ce", "t2"]
RECORD = {"pixdim": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16], "orientation": "RAS"}


@pytest.fixture(scope="module")
def cases(tiny_dataset):
    return discover_cases(tiny_dataset, MODALITIES)


def test_validation_sees_the_image_inference_sees(cases):
    case = next(c for c in cases if c["case"] == "SYNTH_0001")  # T1 and T2 missing
    inferred = case_preprocessing(MODALITIES, RECORD)(dict(case))
    validated = case_preprocessing(MODALITIES, RECORD, label="original_grid")(dict(case))
    assert torch.equal(inferred["image"], validated["image"])
    assert inferred["mask"].tolist() == validated["mask"].tolist() == [True, False, True, False]
    assert isinstance(inferred["label"], str)  # not read
    assert validated["label"].shape[1:] == (32, 32, 32)  # scored where it was read


def test_training_prepares_the_image_alike_and_the_label_as_regions_on_the_network_grid(cases):
    case = cases[0]
    trained = case_preprocessing(MODALITIES, RECORD, label="regions")(dict(case))
    inferred = case_preprocessing(MODALITIES, RECORD)(dict(case))
    assert trained["label"].shape == (3, *trained["image"].shape[1:])
    assert all(size >= 16 for size in trained["image"].shape[1:])  # padded to the patch
    brain = trained["image"].abs().sum(0) > 0
    assert len(trained["label_fg_indices"]) + len(trained["label_bg_indices"]) == int(brain.sum())
    if tuple(trained["image"].shape) == tuple(inferred["image"].shape):  # no padding needed: the same voxels
        assert torch.allclose(trained["image"], inferred["image"])


def test_a_training_dataset_caches_the_nested_preprocessing(cases):
    pipeline = Compose([case_preprocessing(MODALITIES, RECORD, label="regions"), RandFlipd(["image", "label"], 0.5)])
    dataset = cached_dataset(cases[:2], pipeline, "memory", MODALITIES, cache_dir="unused")
    assert "label_fg_indices" in dataset._cache[0]  # the deterministic part ran once, before the first random step


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"label": "all"}, r"label must be one of \['none', 'original_grid', 'regions'\], got 'all'"),
        ({"preprocessing": {**RECORD, "intensity": "minmax"}}, r"intensity must be 'nonzero_zscore'.*got 'minmax'"),
    ],
)
def test_options_are_checked_up_front(arguments, message):
    with pytest.raises(InputError, match=message):
        case_preprocessing(**{"modalities": MODALITIES, "preprocessing": RECORD, **arguments})
