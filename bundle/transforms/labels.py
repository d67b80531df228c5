"""From network output to the label map inference writes, and back to regions: the one path that inference,
evaluation, election and model selection share (label conventions: :mod:`bundle.conventions`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd, InvertibleTransform, MapTransform

from bundle.conventions import LABEL_CONVENTIONS, NETWORK_REGIONS, label_regions
from bundle.errors import InputError
from bundle.transforms.postprocessing import RegionPostprocessingd

__all__ = ["RegionsToLabelsd", "PredictionToLabelsd", "LabelRegionsd"]


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
            labels = torch.zeros_like(regions[:1], dtype=torch.uint8 if regions.dtype == torch.bool else None)
            labels[regions[wt : wt + 1] > 0] = self.values["ED"]
            labels[regions[tc : tc + 1] > 0] = self.values["NCR"]
            labels[regions[et : et + 1] > 0] = self.values["ET"]
            d[key] = labels
        return d


class PredictionToLabelsd(MapTransform):
    """Region logits -> the label map inference writes, on the grid of the image as it was read.

    Sigmoid, back through the preprocessing to the input's grid (``Invertd``, probabilities interpolated linearly),
    threshold, region post-processing (small components, small ET; off by default), then the nested label map
    (:class:`RegionsToLabelsd`). ``inference.json`` writes what this returns; the evaluation, the teacher election
    and the model selection score what this returns, so no number is computed on anything else.

    Args:
        keys: the prediction's key, ``(3, h, w, d)`` logits in ``NETWORK_REGIONS`` order.
        transform: the preprocessing the image went through (inverted); ``None`` keeps the network's grid.
        orig_keys: the key of the image whose applied transforms are inverted.
        threshold: on the sigmoid probability.
        min_component_voxels: connected components of a region smaller than this are removed (0: off).
        et_min_voxels: an enhancing tumour smaller than this becomes necrosis (0: off).
        convention: label values to write, a key of :data:`LABEL_CONVENTIONS`.

    Example:
        >>> logits = torch.full((3, 2, 2, 2), -5.0); logits[:, 0] = 5.0  # first slab: TC, WT and ET
        >>> PredictionToLabelsd("pred", transform=None)({"pred": logits})["pred"][0, :, 0, 0].tolist()
        [4.0, 0.0]
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: InvertibleTransform | None,
        orig_keys: KeysCollection = "image",
        threshold: float = 0.5,
        min_component_voxels: int = 0,
        et_min_voxels: int = 0,
        convention: str = "brats2021",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        steps = [Activationsd(keys, sigmoid=True)]
        if transform is not None:
            steps.append(Invertd(keys, transform, orig_keys=orig_keys, nearest_interp=False, to_tensor=True))
        steps += [
            AsDiscreted(keys, threshold=threshold),
            RegionPostprocessingd(keys, min_component_voxels, et_min_voxels),
            RegionsToLabelsd(keys, convention),
        ]
        self.steps = Compose(steps)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        return self.steps(dict(data))


class LabelRegionsd(MapTransform):
    """Label maps -> the regions BraTS rebuilds from them, ``(3, ...)`` float in network order (TC, WT, ET).

    Args:
        keys: keys of ``(1, H, W, D)`` label maps.
        convention: their label values, a key of :data:`LABEL_CONVENTIONS`.

    Example:
        >>> LabelRegionsd("label")({"label": torch.tensor([[[[0, 1, 2, 4]]]])})["label"][:, 0, 0].tolist()
        [[0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]
    """

    def __init__(self, keys: KeysCollection, convention: str = "brats2021", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.convention = convention
        label_regions(torch.zeros(1), convention)  # checks the convention now

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            regions = torch.as_tensor(label_regions(d[key], self.convention), dtype=torch.float32)
            d[key] = regions.to(d[key].device) if isinstance(d[key], torch.Tensor) else regions
        return d
