"""The suite's fixtures: one torch thread budget per test, the checkout's metadata.json guarded, a tiny synthetic
dataset made once per session. What tests import lives in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bundle.data import make_dataset
from tests.helpers import CONFIGS, THREADS


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(int(THREADS))


@pytest.fixture(scope="session", autouse=True)
def _checkout_metadata_untouched():
    """No test writes into the checkout's configs/metadata.json (a run that does would change every later one)."""
    before = (CONFIGS / "metadata.json").read_bytes()
    yield
    assert (CONFIGS / "metadata.json").read_bytes() == before, "a test wrote into configs/metadata.json"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Eight 32^3 cases in the BraTS 2018-2021 layout, one of them missing T1 and T2."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    make_dataset(root, cases=8, size=32, seed=3)
    for modality in ("t1", "t2"):
        (root / "SYNTH_0001" / f"SYNTH_0001_{modality}.nii.gz").unlink()
    return root
