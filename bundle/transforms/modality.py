"""Dictionary transforms for per-sequence inputs: load them, stack them with a presence mask, record them."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform
from monai.utils import convert_to_tensor

from bundle.conventions import DEFAULT_MODALITIES, case_name, check_modalities
from bundle.errors import InputError
from bundle.io import atomic_write_json

__all__ = ["LoadSequencesd", "StackModalitiesd", "RecordModalitiesd", "write_modalities_record"]

logger = logging.getLogger(__name__)


class LoadSequencesd(MapTransform):
    """MONAI's ``LoadImaged`` for the one-file-per-sequence keys of BraTS layouts; absent keys are skipped.

    Not a ``LoadImaged`` subclass, so that clients which replace or drop ``LoadImage*`` transforms leave
    it alone: MONAI Label swaps every ``LoadImaged`` of an inference config for a loader that needs all
    its keys, and MONAI Deploy removes them. Both hand over a single 4-channel ``image``, which a plain
    ``LoadImaged(keys="image")`` loads; this transform then finds no sequence key and does nothing.

    Args:
        keys: modality keys.
        kwargs: arguments of ``LoadImaged`` (``allow_missing_keys`` is always True).
    """

    def __init__(self, keys: KeysCollection, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.loader = LoadImaged(keys, allow_missing_keys=True, **kwargs)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        return self.loader(data)


class StackModalitiesd(MapTransform):
    """Stack per-sequence images into one ``(N, H, W, D)`` image and record which sequences are present.

    Accepts both shapes of data dict:

    - one key per modality, each a loaded ``(1, H, W, D)`` image, absent keys meaning absent sequences
      (BraTS layouts); an absent sequence becomes an all-zero channel;
    - a single ``image`` already holding ``N`` channels (MSD Task01, MONAI Label, MONAI Deploy), where
      an all-zero channel means the sequence is missing.

    The output ``mask_key`` is a bool tensor ``(N,)``, True where the sequence is present (a loaded
    image that is all zero counts as absent).

    Args:
        keys: modality keys, in channel order.
        image_key: key of the stacked output (and of an already stacked input).
        mask_key: key of the presence mask output.
        allow_missing_keys: must stay True for per-modality inputs, where absent files have no key.
        use: the sequences to use; the others become absent (zero channel, False in the mask) even where a
            case has them, e.g. to score one combination of sequences. ``None`` uses every present sequence.

    Example:
        >>> t = StackModalitiesd(keys=["flair", "t1"])
        >>> out = t({"flair": torch.ones(1, 4, 4, 4)})
        >>> out["image"].shape, out["mask"].tolist()
        (torch.Size([2, 4, 4, 4]), [True, False])
    """

    def __init__(
        self,
        keys: KeysCollection = DEFAULT_MODALITIES,
        image_key: str = "image",
        mask_key: str = "mask",
        allow_missing_keys: bool = True,
        use: Sequence[str] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        check_modalities([str(k) for k in self.keys])
        self.image_key = image_key
        self.mask_key = mask_key
        self.use = None if use is None else [str(m) for m in use]
        if self.use is not None and (not self.use or not set(self.use) <= set(self.keys)):
            raise InputError(
                f"sequences to use must be a non-empty subset of the model's modalities {list(self.keys)}, got {use}."
            )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        present = [key for key in self.keys if key in d]
        if present:
            d[self.image_key] = self._stack(d, present)
            for key in present:
                del d[key]
        elif self.image_key not in d:
            raise InputError(
                f"no modality image in the data: expected keys {list(self.keys)} (one per sequence) or "
                f"{self.image_key!r} (all sequences as channels), got keys {list(d)}."
            )
        image = d[self.image_key]
        if image.shape[0] != len(self.keys):
            raise InputError(
                f"{_source(image)}: expected {len(self.keys)} channels, one per modality {list(self.keys)}, "
                f"got an image of shape {list(image.shape)}."
            )
        if self.use is not None:
            unused = torch.tensor([key not in self.use for key in self.keys])
            image = d[self.image_key] = image * ~unused.reshape(-1, *([1] * (image.dim() - 1)))
        d[self.mask_key] = convert_to_tensor(image, track_meta=False).reshape(image.shape[0], -1).abs().amax(dim=1) > 0
        if self.use is not None and not bool(d[self.mask_key].any()):
            raise InputError(
                f"{_source(image)}: the case has none of the sequences to use {self.use}; leave it out or use others."
            )
        return d

    def _stack(self, d: dict, present: list[Hashable]) -> torch.Tensor:
        reference = d[present[0]]
        for key in present:
            image = d[key]
            if image.shape[0] != 1:
                raise InputError(
                    f"{_source(image)}: modality {key!r} must be a single 3D volume (1 channel after "
                    f"EnsureChannelFirst), got shape {list(image.shape)}."
                )
            if image.shape != reference.shape:
                raise InputError(
                    f"{_source(image)}: modality {key!r} has spatial shape {list(image.shape[1:])} but "
                    f"{_source(reference)} ({present[0]!r}) has {list(reference.shape[1:])}; all sequences of a "
                    "case must be co-registered on one grid (resample them first)."
                )
        zeros = torch.zeros_like(torch.as_tensor(reference), dtype=torch.float32)
        channels = [torch.as_tensor(d[k], dtype=torch.float32) if k in d else zeros for k in self.keys]
        stacked = torch.cat(channels, dim=0)
        if isinstance(reference, MetaTensor):
            return MetaTensor(stacked, meta=reference.meta, applied_operations=reference.applied_operations)
        return stacked


def _source(image: torch.Tensor) -> str:
    """File an image was loaded from, for error messages."""
    if isinstance(image, MetaTensor):
        name = image.meta.get("filename_or_obj")
        if name:
            return str(name)
    return "image"


def write_modalities_record(
    output_dir: str | os.PathLike, case: str, used: Sequence[str], missing: Sequence[str]
) -> Path:
    """Write ``<output_dir>/<case>_modalities.json`` atomically: the sequences a case's segmentation used and lacked."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"case": case, "modalities_used": list(used), "modalities_missing": list(missing)}
    return atomic_write_json(folder / f"{case}_modalities.json", record)


class RecordModalitiesd(MapTransform):
    """Log which sequences a case's prediction used and write them to a JSON sidecar.

    For each case it writes ``<output_dir>/<case>_modalities.json`` (atomically) with the sequences used
    and missing, so a segmentation can always be traced back to its inputs. Place it after the
    transform that saves the segmentation, so that a sidecar only exists beside a written segmentation.

    Args:
        mask_key: key of the ``(N,)`` bool presence mask.
        modalities: sequence names in channel order.
        output_dir: folder of the sidecars (created); ``None`` only logs (the MONAI Deploy app writes
            them itself, after its segmentation).
        case_key: key of the case name; when absent, the image file name is used.
        image_key: key of the image whose ``filename_or_obj`` names the case otherwise.
        pred_key: key of the saved segmentation, whose ``saved_to`` (MONAI's ``savepath_in_metadict``) names its
            file: when the sidecar cannot be written, that file is removed, so no segmentation lacks its record.
    """

    def __init__(
        self,
        mask_key: str = "mask",
        modalities: Sequence[str] = DEFAULT_MODALITIES,
        output_dir: str | None = ".",
        case_key: str = "case",
        image_key: str = "image",
        pred_key: str = "pred",
    ) -> None:
        super().__init__([mask_key])
        self.mask_key = mask_key
        self.modalities = check_modalities(modalities)
        self.output_dir = output_dir
        self.case_key = case_key
        self.image_key = image_key
        self.pred_key = pred_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        mask = convert_to_tensor(d[self.mask_key], dtype=torch.bool, track_meta=False).flatten().tolist()
        case = case_name(d, default=self.image_key, case_key=self.case_key, image_key=self.image_key)
        used = [m for m, present in zip(self.modalities, mask) if present]
        missing = [m for m, present in zip(self.modalities, mask) if not present]
        if self.output_dir is not None:
            try:
                write_modalities_record(self.output_dir, case, used, missing)
            except OSError as error:
                saved = getattr(d.get(self.pred_key), "meta", {}).get("saved_to")
                if saved:
                    Path(saved).unlink(missing_ok=True)
                raise InputError(
                    f"could not write {Path(self.output_dir) / f'{case}_modalities.json'} ({error.strerror or error}); "
                    + (f"{Path(saved).name} was removed, so that no segmentation lacks its record; " if saved else "")
                    + "free disk space or point --output_dir at a writable folder, then run again."
                ) from None
        logger.info(f"{case}: segmented from {'+'.join(used)}" + (f" (missing {'+'.join(missing)})" if missing else ""))
        return d
