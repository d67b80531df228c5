"""Sliding-window inference with one modality mask per case, for clients that pass only the image."""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.inferers import SlidingWindowInferer

from bundle.errors import InputError

__all__ = ["presence_mask", "CaseMaskInferer"]


def presence_mask(image: torch.Tensor) -> torch.Tensor:
    """Which sequences an image holds: ``(B, N)`` bool, False for an all-zero channel.

    Args:
        image: ``(B, N, ...)``, one channel per sequence.

    Example:
        >>> presence_mask(torch.stack([torch.ones(2, 2, 2), torch.zeros(2, 2, 2)])[None]).tolist()
        [[True, False]]
    """
    return image.detach().flatten(2).abs().amax(dim=2) > 0


class CaseMaskInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` that decides which sequences are present once for the whole case.

    Called without ``mask`` (MONAI Label's ``BundleInferTask`` calls ``inferer(image, network)``), it takes
    the mask from the whole image's channels before windowing and hands it to every window. Otherwise
    the network would decide per window: a window where a present sequence happens to be zero would
    mean-fill it, and an all-zero window would be decoded from all-absent features, a state never trained.
    An explicit ``mask`` (the bundle's own configs pass the batch's) is used as given.

    Args:
        args, kwargs: those of ``SlidingWindowInferer`` (``roi_size``, ``sw_batch_size``, ``overlap`` ...).

    Raises:
        InputError: when a case has no sequence at all (every channel zero).
    """

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, mask: torch.Tensor | None = None, **kwargs
    ) -> Any:
        if mask is None:
            mask = presence_mask(inputs)
            if not bool(mask.any(dim=1).all()):
                raise InputError(
                    f"an image of shape {list(inputs.shape)} has no sequence: every channel is zero. Check that the "
                    "image holds the sequences in the order of the model's modalities, or leave the case out."
                )
        return super().__call__(inputs, network, *args, mask=mask, **kwargs)
