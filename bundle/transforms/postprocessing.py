"""The BraTS submission post-processing that missing-modality papers apply and MONAI lacks: small ET -> necrosis.

Removing small connected components is MONAI's ``RemoveSmallObjects``; :func:`region_postprocessing` chains the
two in the order the evaluation and ``inference.json`` apply them.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, RemoveSmallObjects, Transform

from bundle.conventions import NETWORK_REGIONS
from bundle.errors import InputError

__all__ = ["SmallEnhancingToNecrosis", "region_postprocessing", "RegionPostprocessingd"]

# MONAI 1.6's RemoveSmallObjects passes scikit-image 0.26 the deprecated `min_size` (same meaning until
# scikit-image 2.0), which would warn once per case and region
warnings.filterwarnings("ignore", message="Parameter `min_size` is deprecated", category=FutureWarning)

_ET = NETWORK_REGIONS.index("ET")
_TC = NETWORK_REGIONS.index("TC")


def _check_voxels(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{name} must be a whole number of voxels >= 0 (0 turns it off), got {value!r}.")
    return value


class SmallEnhancingToNecrosis(Transform):
    """Relabel a predicted enhancing tumour smaller than ``min_voxels`` as necrosis (it stays in the tumour core).

    A case without enhancement scores ET Dice 0 for any false-positive ET voxel (BraTS: empty truth, non-empty
    prediction), so the official LCKD code, like most BraTS submissions, turns ET below 500 voxels into necrosis.

    Args:
        min_voxels: ET with fewer voxels is relabelled; 0 turns the rule off.

    Example:
        >>> regions = torch.zeros(3, 4, 4, 4, dtype=torch.bool)
        >>> regions[:, :2, :2, :2] = True  # 8 voxels of TC, WT and ET
        >>> out = SmallEnhancingToNecrosis(10)(regions)
        >>> [int(out[c].sum()) for c in range(3)]  # TC, WT, ET
        [8, 8, 0]
    """

    def __init__(self, min_voxels: int = 500) -> None:
        self.min_voxels = _check_voxels(min_voxels, "et_min_voxels")

    def __call__(self, regions: torch.Tensor) -> torch.Tensor:
        """``regions``: binary ``(3, ...)`` channels in ``NETWORK_REGIONS`` order (TC, WT, ET)."""
        enhancing = regions[_ET] > 0
        size = int(enhancing.sum())
        if not 0 < size < self.min_voxels:
            return regions
        regions = regions.clone()
        regions[_TC] = (regions[_TC] > 0) | enhancing
        regions[_ET] = 0
        return regions


def region_postprocessing(min_component_voxels: int = 0, et_min_voxels: int = 0) -> Compose:
    """Post-processing of binary region channels (TC, WT, ET), each step off at 0.

    First connected components smaller than ``min_component_voxels`` are removed from each region (MONAI's
    ``RemoveSmallObjects``, 26-connectivity), then an ET smaller than ``et_min_voxels`` becomes necrosis.

    Example:
        >>> region_postprocessing(0, 500).transforms  # doctest: +ELLIPSIS
        (<...SmallEnhancingToNecrosis object at ...>,)
    """
    steps: list = []
    if _check_voxels(min_component_voxels, "min_component_voxels"):
        steps.append(RemoveSmallObjects(min_size=min_component_voxels, connectivity=3, independent_channels=True))
    if _check_voxels(et_min_voxels, "et_min_voxels"):
        steps.append(SmallEnhancingToNecrosis(et_min_voxels))
    return Compose(steps)


class RegionPostprocessingd(MapTransform):
    """Dictionary version of :func:`region_postprocessing`, for ``inference.json``."""

    def __init__(
        self,
        keys: KeysCollection,
        min_component_voxels: int = 0,
        et_min_voxels: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.steps = region_postprocessing(min_component_voxels, et_min_voxels)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.steps(d[key])
        return d
