"""Memory facts (bundle/memory.py): the estimates the settings and the cache policy compare with the machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bundle.memory import INFERENCE_BYTES_PER_VOXEL, TRAINING_BYTES_PER_VOXEL, device_memory, step_memory


def test_cpu_memory_is_the_machines_ram():
    assert device_memory("cpu") == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@pytest.mark.parametrize("training, per_voxel", [(True, TRAINING_BYTES_PER_VOXEL), (False, INFERENCE_BYTES_PER_VOXEL)])
def test_step_memory_scales_with_every_factor_and_amp_halves_it(training, per_voxel):
    one = step_memory([1, 1, 1], 1, 1, 1, training)
    assert one == per_voxel
    assert step_memory([64, 32, 16], 3, 4, 16, training) == per_voxel * 64 * 32 * 16 * 3 * 4 * 16
    assert step_memory([64] * 3, 2, 4, 16, training, amp=True) * 2 == step_memory([64] * 3, 2, 4, 16, training)


@pytest.mark.slow
def test_importing_the_settings_first_needs_no_lazy_import():
    """settings -> data.caching -> memory, with nothing pointing back: each imports alone in a fresh interpreter."""
    for module in ("bundle.memory", "bundle.data.caching", "bundle.data.validation", "bundle.settings"):
        code = f"import {module}, sys; print('bundle.settings' in sys.modules)"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == str(module == "bundle.settings"), module
