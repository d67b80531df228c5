"""The region -> label conversion MONAI lacks (label conventions: :mod:`bundle.conventions`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from bundle.conventions import LABEL_CONVENTIONS, NETWORK_REGIONS
from bundle.errors import InputError

__all__ = ["RegionsToLabelsd"]


class RegionsToLabelsd(MapTransform):
    """Turn binary region channels (TC, WT, ET) into one label map, as BraTS does.

    Whole tumour is labelled edema, tumour core overwrites it with necrosis, and enhancing tumour
    overwrites both, so ET lies inside TC inside WT in the result.

    Args:
        keys: keys of ``(3, H, W, D)`` binary region maps in ``NETWORK_REGIONS`` order (TC, WT, ET).
        convention: a key of :data:`LABEL_CONVENTIONS`, the label values to write.

    Example:
        >>> regions = torch.zeros(3, 1, 1, 3)
        >>> regions[1] = 1; regions[0, ..., 1:] = 1; regions[2, ..., 2] = 1
        >>> RegionsToLabelsd("pred")({"pred": regions})["pred"].flatten().tolist()
        [2.0, 1.0, 4.0]
    """

    def __init__(self, keys: KeysCollection, convention: str = "brats2021", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if convention not in LABEL_CONVENTIONS:
            raise InputError(f"convention must be one of {list(LABEL_CONVENTIONS)}, got {convention!r}.")
        self.values = LABEL_CONVENTIONS[convention]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        tc, wt, et = (NETWORK_REGIONS.index(region) for region in ("TC", "WT", "ET"))
        for key in self.key_iterator(d):
            regions = d[key]
            if regions.shape[0] != len(NETWORK_REGIONS):
                raise InputError(
                    f"{key!r} must have {len(NETWORK_REGIONS)} region channels {NETWORK_REGIONS}, got shape {list(regions.shape)}."
                )
            labels = torch.zeros_like(regions[:1])
            labels[regions[wt : wt + 1] > 0] = self.values["ED"]
            labels[regions[tc : tc + 1] > 0] = self.values["NCR"]
            labels[regions[et : et + 1] > 0] = self.values["ET"]
            d[key] = labels
        return d
