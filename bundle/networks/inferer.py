"""Sliding-window inference with one modality mask per case, for clients that pass only the image."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Callable

import torch
from monai.inferers import SlidingWindowInferer

from bundle.errors import InputError

__all__ = ["presence_mask", "case_window", "CaseMaskInferer"]

logger = logging.getLogger(__name__)


def presence_mask(image: torch.Tensor) -> torch.Tensor:
    """Which sequences an image holds: ``(B, N)`` bool, False for an all-zero channel.

    Args:
        image: ``(B, N, ...)``, one channel per sequence.

    Example:
        >>> presence_mask(torch.stack([torch.ones(2, 2, 2), torch.zeros(2, 2, 2)])[None]).tolist()
        [[True, False]]
    """
    return image.detach().flatten(2).abs().amax(dim=2) > 0


def case_window(roi_size: Sequence[int], image_size: Sequence[int], divisor: Sequence[int] | int | None) -> list[int]:
    """The sliding window for one image: ``roi_size``, but no larger than the image rounded up to ``divisor`` (per
    axis, :func:`bundle.networks.lckdnet.downsampling`; one number for all three axes).

    A window much larger than the image is mostly zero padding, which changes every instance-norm statistic the
    network computes (a model trained on 32^3 patches of an 80 x 80 x 52 image, run with a 128^3 window, found
    28 times the true tumour volume). ``divisor`` ``None`` keeps ``roi_size``.

    Example:
        >>> case_window([128, 128, 128], [60, 70, 40], divisor=16)
        [64, 80, 48]
    """
    if not divisor:
        return [int(r) for r in roi_size]
    divisors = [int(divisor)] * 3 if isinstance(divisor, int) else [int(d) for d in divisor]
    return [min(int(r), math.ceil(int(s) / d) * d) for r, s, d in zip(roi_size, image_size, divisors)]


def _divisor(network: Any) -> list[int] | int | None:
    """The spatial divisor of a network (LCKDNet's ``divisor`` per axis, kept by TorchScript too; one number in models
    exported before it was per axis), through bound methods, DDP, ``torch.compile`` and MONAI Deploy's
    ``TorchScriptModel`` (its ``predictor``)."""
    owner = getattr(network, "__self__", network)
    for attribute in ("module", "_orig_mod", "predictor"):
        owner = getattr(owner, attribute, owner)
    divisor = getattr(owner, "divisor", None)
    if isinstance(divisor, int):
        return divisor
    return [int(d) for d in divisor] if isinstance(divisor, (list, tuple)) and len(divisor) == 3 else None


class CaseMaskInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` that decides which sequences are present once for the whole case.

    Called without ``mask`` (MONAI Label's ``BundleInferTask`` calls ``inferer(image, network)``), it takes
    the mask from the whole image's channels before windowing and hands it to every window. Otherwise
    the network would decide per window: a window where a present sequence happens to be zero would
    mean-fill it, and an all-zero window would be decoded from all-absent features, a state never trained.
    An explicit ``mask`` (the bundle's own configs pass the batch's) is used as given.

    The window is ``roi_size`` but never larger than the image rounded up to the network's spatial divisor
    (:func:`case_window`): inference crops to the brain, as training does, and a small brain gets a small window.

    Args:
        args, kwargs: those of ``SlidingWindowInferer`` (``roi_size``, ``sw_batch_size``, ``overlap`` ...).

    Raises:
        InputError: when a case has no sequence at all (every channel zero).
    """

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, mask: torch.Tensor | None = None, **kwargs
    ) -> Any:
        if mask is None and "masks" not in kwargs:  # forward_combinations takes its combinations instead
            mask = presence_mask(inputs)
            if not bool(mask.any(dim=1).all()):
                raise InputError(
                    f"an image of shape {list(inputs.shape)} has no sequence: every channel is zero. Check that the "
                    "image holds the sequences in the order of the model's modalities, or leave the case out."
                )
        configured = self.roi_size
        window = case_window(configured, inputs.shape[2:], _divisor(network))
        if window != list(configured):
            logger.debug(f"window {window} for an image of {list(inputs.shape[2:])} (roi_size {list(configured)})")
        self.roi_size = window
        try:
            if mask is not None:
                kwargs["mask"] = mask
            return super().__call__(inputs, network, *args, **kwargs)
        finally:
            self.roi_size = configured
