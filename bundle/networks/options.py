"""Inference-time speed options for a trained network: channels-last memory layout and ``torch.compile``."""

from __future__ import annotations

import torch
from torch import nn

from bundle.flags import flag

__all__ = ["inference_network"]


def inference_network(network: nn.Module, channels_last: bool | str = False, compile: bool | str = False) -> nn.Module:
    """The network to run inference with, after optional speed-ups; weights stay shared with ``network``.

    Args:
        network: the model (weights may be loaded into it before or after this call).
        channels_last: store its weights as ``torch.channels_last_3d``; 3D convolutions then run
            in that layout (helps on GPUs with tensor cores; measure with ``scripts/benchmark.py``).
        compile: wrap it in ``torch.compile`` (first call compiles; needs a C++ compiler on CPU).
        Both are boolean settings read with :func:`bundle.flags.flag` (the command line's ``"false"`` is false).

    Returns:
        ``network`` itself, or a compiled module sharing its parameters.

    Example:
        >>> conv = inference_network(nn.Conv3d(4, 8, 3), channels_last=True)
        >>> conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        True
    """
    if flag(channels_last, "channels_last"):
        network = network.to(memory_format=torch.channels_last_3d)
    if flag(compile, "compile"):
        network = torch.compile(network)
    return network
