"""Where the preprocessed cases live during training: in RAM when they fit, on disk when they do not.

The deterministic part of the pipeline (load, resample, crop to the brain, normalise, crop indices) is
computed once per case and kept; only the random crops and augmentations run per sample. MONAI's
``CacheDataset`` keeps the result in RAM and ``PersistentDataset`` on disk. BraTS 2021's 1,251 cases do
not fit a 64 GB workstation's RAM, so ``cache="auto"`` estimates the cache from the image headers and
chooses.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import Compose, convert_to_contiguous

from bundle.data.validation import resampled_shape, voxel_sizes
from bundle.errors import InputError, check_choice
from bundle.io import file_signature
from bundle.memory import CACHED_BYTES_PER_VOXEL, device_memory

__all__ = ["CACHE_MODES", "check_cache", "MEMORY_CACHE_FRACTION", "cache_size", "cache_mode", "cached_dataset"]

logger = logging.getLogger(__name__)

CACHE_MODES = ("auto", "memory", "disk", "none")
"""``memory``: MONAI ``CacheDataset`` (``cache_rate`` of the cases in RAM); ``disk``: ``PersistentDataset`` in
``cache_dir``; ``none``: every sample read from the NIfTI files; ``auto``: memory when :func:`cache_size` of the
training and validation cases is at most :data:`MEMORY_CACHE_FRACTION` of RAM, disk otherwise."""


def check_cache(cache: Any) -> str:
    """``cache`` as :func:`cache_mode` takes it (also checked by ``bundle.settings`` before a workflow reads data).

    Raises:
        InputError: naming the allowed values.
    """
    return check_choice("cache", cache, CACHE_MODES)


MEMORY_CACHE_FRACTION = 0.5
"""Largest fraction of the machine's RAM that ``cache="auto"`` gives to cases (the rest: the network, the data
loader workers and the operating system)."""


def _resampled_voxels(path: str, pixdim: Sequence[float]) -> int:
    image = nib.load(path)
    return math.prod(resampled_shape(image.shape[:3], voxel_sizes(image.affine), pixdim))


def _case_image(item: Mapping[str, Any], modalities: Sequence[str]) -> str | None:
    return item.get("image") or next((item[m] for m in modalities if item.get(m)), None)


def cache_size(items: Sequence[Mapping[str, Any]], modalities: Sequence[str], pixdim: Sequence[float]) -> int:
    """Estimated bytes of the cached, preprocessed ``items`` (read from headers only, before the brain crop).

    Example:
        >>> cache_size([{"flair": "BraTS2021_00000_flair.nii.gz"}], ["flair"], [1, 1, 1]) / 2**20  # doctest: +SKIP
        255.1
    """
    total = 0
    for item in items:
        path = _case_image(item, modalities)
        if path is not None:
            total += _resampled_voxels(path, pixdim) * CACHED_BYTES_PER_VOXEL
    return total


def cache_mode(
    cache: str,
    items: Sequence[Mapping[str, Any]],
    modalities: Sequence[str],
    pixdim: Sequence[float],
    cache_rate: float = 1.0,
) -> str:
    """Resolve ``cache`` (a name of :data:`CACHE_MODES`) for the cases ``items`` (training and validation).

    Returns:
        ``"memory"``, ``"disk"`` or ``"none"``; ``"auto"`` becomes ``"memory"`` when ``cache_rate`` of the
        estimated cache fits :data:`MEMORY_CACHE_FRACTION` of RAM, ``"disk"`` otherwise (logged with the sizes).
    """
    check_cache(cache)
    if cache != "auto":
        return cache
    needed = cache_size(items, modalities, pixdim) * cache_rate
    budget = MEMORY_CACHE_FRACTION * device_memory("cpu")
    mode = "memory" if needed <= budget else "disk"
    logger.info(
        f"cache: {len(items)} training and validation cases, at most {needed / 2**30:.1f} GB preprocessed; "
        f"{'in RAM' if mode == 'memory' else 'on disk'} (RAM budget {budget / 2**30:.1f} GB, "
        f"{MEMORY_CACHE_FRACTION:.0%} of this machine's)"
    )
    return mode


def _file_signature_hash(modalities: Sequence[str]) -> Callable[[Mapping[str, Any]], bytes]:
    """A ``PersistentDataset`` hash of a case: its entries and each file's signature (as the dataset check keeps
    them), so that a rewritten file is preprocessed again instead of read stale from the cache."""

    def item_hash(item: Mapping[str, Any]) -> bytes:
        signatures = [
            (key, file_signature(item[key]))
            for key in ("image", "label", *modalities)
            if isinstance(item.get(key), (str, os.PathLike)) and os.path.exists(item[key])
        ]
        digest = hashlib.sha256(pickle_hashing(dict(item)) + repr(signatures).encode())
        return digest.hexdigest().encode()

    return item_hash


def _loadable(value: Any) -> Any:
    """``value`` with the numpy arrays, numpy scalars and enums inside MetaTensors' metadata and applied transforms made
    tensors, Python numbers and strings, so that the cached file loads with ``torch.load(weights_only=True)`` and keeps what ``Invertd``
    needs to map a prediction back to the input's grid."""
    if isinstance(value, MetaTensor):
        value.meta = _loadable(dict(value.meta))
        value.applied_operations = _loadable(list(value.applied_operations))
        return value
    if isinstance(value, np.ndarray):
        return torch.as_tensor(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Enum):  # MONAI's TraceKeys, SpaceKeys: str enums, which torch.load would refuse
        return value.value
    if isinstance(value, dict):
        return {_loadable(key): _loadable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_loadable(item) for item in value)
    return value


class CompactPersistentDataset(PersistentDataset):
    """``PersistentDataset`` that stores each case contiguously, as ``CacheDataset(as_contiguous=True)`` keeps it:
    a cropped tensor is a view of the uncropped one, and ``torch.save`` would write the whole uncropped volume. Cases
    keep their metadata and applied transforms (``track_meta``), which validation needs to score on the input's grid.

    A cached file that cannot be read (truncated by a full disk or a kill: MONAI recomputes only files with a bad
    pickle header and raises for the rest) is recomputed too, with one warning naming it and its case.
    """

    def _pre_transform(self, item_transformed: Any) -> Any:
        return _loadable(convert_to_contiguous(super()._pre_transform(item_transformed)))

    def _cachecheck(self, item_transformed: Any) -> Any:
        try:
            return super()._cachecheck(item_transformed)
        except (RuntimeError, EOFError, OSError) as error:
            if self.cache_dir is None:
                raise
            name = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash  # as MONAI names it
            hashfile = Path(self.cache_dir) / f"{name}.pt"
            if not hashfile.is_file():
                raise
            logger.warning(
                f"cache file {hashfile} (case {item_transformed.get('case', '?')}) is unreadable "
                f"({str(error).splitlines()[0][:120]}); it is deleted and the case preprocessed again."
            )
            hashfile.unlink()
            computed = super()._cachecheck(item_transformed)
            # as the other cases of the batch come: loaded from the cache (tensors, not the arrays just computed)
            return torch.load(hashfile, weights_only=self.weights_only) if hashfile.is_file() else computed


def cached_dataset(
    data: Sequence[Mapping[str, Any]],
    transform: Callable,
    mode: str,
    modalities: Sequence[str],
    cache_dir: str | os.PathLike,
    cache_rate: float = 1.0,
    num_workers: int = 0,
) -> Dataset:
    """The dataset of one split with its preprocessed cases kept as ``mode`` says.

    Args:
        data: the split's items (``{modality: path, "label": path, ...}``).
        transform: the whole pipeline, e.g. ``Compose([case_preprocessing, augmentation])``; the cached part ends at
            its first random transform (nested ``Compose`` are flattened first: MONAI counts a ``Compose`` as random).
        mode: ``"memory"``, ``"disk"`` or ``"none"`` (as from :func:`cache_mode`).
        modalities: the sequence keys of an item, for the disk cache's file signatures.
        cache_dir: the disk cache's folder (created); entries are named by a hash of the case's files and of
            the cached transforms, so a changed file or setting is preprocessed again.
        cache_rate: fraction of the cases in the memory cache.
        num_workers: threads filling the memory cache.
    """
    if isinstance(transform, Compose):
        transform = transform.flatten()
    if mode == "memory":
        return CacheDataset(data=data, transform=transform, cache_rate=cache_rate, num_workers=num_workers)
    if mode == "disk":
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return CompactPersistentDataset(
            data=data,
            transform=transform,
            track_meta=True,
            cache_dir=cache_dir,
            hash_func=_file_signature_hash(modalities),
            hash_transform=pickle_hashing,
        )
    if mode == "none":
        return Dataset(data=data, transform=transform)
    raise InputError(f"cache mode must be 'memory', 'disk' or 'none', got {mode!r}.")
