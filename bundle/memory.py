"""Memory facts of the machine and of the network: how much a device has, and how much one step, one sliding-window
batch or one cached case takes.

The per-voxel constants are measured, not derived; the checks that compare them with the machine live where the
choices are made (:mod:`bundle.settings` for patches and batches, :mod:`bundle.data.caching` for the cache,
:mod:`bundle.data.validation` for one case). This module imports nothing of the bundle, so each of those can import it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "TRAINING_BYTES_PER_VOXEL",
    "INFERENCE_BYTES_PER_VOXEL",
    "CACHED_BYTES_PER_VOXEL",
    "device_memory",
    "step_memory",
]

TRAINING_BYTES_PER_VOXEL = 48
"""Peak memory of one training step, in bytes per patch voxel, per sample, per sequence and per filter of the
first level (measured on CPU in float32: 3.1 kB per voxel and sample with 4 sequences and 16 filters, at 64^3
and 96^3 patches)."""

INFERENCE_BYTES_PER_VOXEL = 19
"""The same for one sliding-window batch without gradients (1.2 kB per voxel and window, measured alike)."""

CACHED_BYTES_PER_VOXEL = 10
"""Bytes one cached case takes per voxel of its resampled grid (before the brain crop): measured 9.7 on
full-size anatomical phantoms (``scripts/measure_full_size.py``), where the crop keeps the brain's bounding
box (about 40 % of BraTS's 240 x 240 x 155 grid) with four float32 sequences (16 B per kept voxel), the three
boolean region channels (3 B) and the int64 crop indices of the brain's voxels (8 B each)."""


def device_memory(device: Any) -> int:
    """Total memory in bytes of ``device``: the GPU's for CUDA devices, the machine's RAM otherwise.

    Example:
        >>> device_memory("cpu") > 2**30
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device.index or 0).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def step_memory(
    patch_size: Sequence[int], samples: int, modalities: int, first_filters: int, training: bool, amp: bool = False
) -> int:
    """Estimated peak bytes of one training step (``training``) or one sliding-window batch.

    Args:
        patch_size: the patch (or window) size.
        samples: patches per step: batch_size x num_samples in training, sw_batch_size in inference.
        modalities: number of sequences (the shared encoder runs once per sequence).
        first_filters: filters of the first level, where most of the memory goes.
        training: with gradients (training) or without.
        amp: mixed precision halves the activations.

    Returns:
        Bytes.

    Example:
        >>> round(step_memory([128, 128, 128], 4, 4, 16, training=True) / 2**30, 1)
        24.0
    """
    per_voxel = TRAINING_BYTES_PER_VOXEL if training else INFERENCE_BYTES_PER_VOXEL
    total = per_voxel * math.prod(patch_size) * samples * modalities * first_filters
    return total // 2 if amp else total
