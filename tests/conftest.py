"""Shared fixtures: a tiny synthetic dataset, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bundle.data import make_dataset

BUNDLE_ROOT = Path(__file__).resolve().parents[1]

# Tiny-model overrides for any workflow config; 32^3 volumes, narrow filters.
TINY_OVERRIDES = {
    "patch_size": [32, 32, 32],
    "filters": [4, 8, 16, 32],
    "kernel_size": [3, 3, 3, 3],
    "strides": [1, 2, 2, 2],
    "num_workers": 0,
    "batch_size": 2,
    "num_samples": 1,
    "sw_batch_size": 2,
}


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Eight 32^3 cases in the BraTS 2018-2021 layout, one of them missing T1 and T2."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    make_dataset(root, cases=8, size=32, seed=3)
    for modality in ("t1", "t2"):
        (root / "SYNTH_0001" / f"SYNTH_0001_{modality}.nii.gz").unlink()
    return root
