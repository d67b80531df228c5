"""ONNX export of LCKDNet with the modality mask as a second input."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from bundle.networks.lckdnet import LCKDNet

__all__ = ["export_onnx"]


def export_onnx(
    network: LCKDNet, filepath: str | os.PathLike, roi_size: Sequence[int] = (128, 128, 128), opset: int = 17
) -> Path:
    """Write ``network`` as ONNX with inputs ``image (B, N, H, W, D)`` and ``mask (B, N)`` bool, output ``pred``.

    The mask enters by tensor arithmetic only, so one graph serves every modality combination; batch
    and spatial sizes are dynamic (spatial sizes must stay multiples of the network's downsampling).
    Uses the TorchScript-based exporter (``dynamo=False``), which needs no extra package.

    Args:
        network: the trained network (exported in eval mode).
        filepath: the ``.onnx`` file to write.
        roi_size: spatial size of the example input used for tracing.
        opset: ONNX opset version.

    Returns:
        ``filepath``.

    Example:
        >>> export_onnx(LCKDNet(filters=[4, 8, 16], kernel_size=[3, 3, 3], strides=[1, 2, 2]), "m.onnx", (16, 16, 16))
        PosixPath('m.onnx')
    """
    network = network.eval()
    image = torch.zeros(1, network.num_modalities, *roi_size)
    image[:, :, roi_size[0] // 2] = 1.0
    mask = torch.ones(1, network.num_modalities, dtype=torch.bool)
    spatial = {2: "height", 3: "width", 4: "depth"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer notes the input checks it cannot record
        torch.onnx.export(
            network,
            (image, mask),
            str(filepath),
            input_names=["image", "mask"],
            output_names=["pred"],
            dynamic_axes={"image": {0: "batch", **spatial}, "mask": {0: "batch"}, "pred": {0: "batch", **spatial}},
            opset_version=opset,
            dynamo=False,
        )
    return Path(filepath)
