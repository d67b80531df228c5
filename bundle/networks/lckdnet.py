"""LCKDNet: a DynUNet-style network with one encoder pass per MRI sequence, mean-fill of missing
sequences and a shared decoder."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, List, Optional, Tuple, Union

import torch
from monai.networks.blocks.dynunet_block import UnetOutBlock, UnetResBlock, UnetUpBlock, get_conv_layer
from torch import nn

from bundle.conventions import DEFAULT_MODALITIES, NETWORK_REGIONS, check_modalities
from bundle.errors import InputError, check_choice
from bundle.flags import flag
from bundle.networks.inferer import presence_mask

__all__ = ["LCKDNet", "FILL_MODES", "plain", "encode_record", "decode_record"]

FILL_MODES: tuple[str, ...] = ("all_levels", "bottleneck")


def encode_record(record: dict) -> torch.Tensor:
    """A JSON-serialisable record as a uint8 tensor of its UTF-8 JSON."""
    return torch.tensor(list(json.dumps(record, sort_keys=True).encode("utf-8")), dtype=torch.uint8)


def decode_record(state: Any) -> dict:
    """The record of :func:`encode_record` (or a record dict as is); ``{}`` for anything else."""
    if isinstance(state, torch.Tensor):
        return dict(json.loads(bytes(state.tolist()).decode("utf-8")))
    return dict(state) if isinstance(state, dict) else {}


def plain(value: Any) -> Any:
    """Tuples and nested sequences as lists of ints, as JSON and a network's record store them."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class _Encoder(nn.Module):
    """DynUNet encoder path (input block, downsamples, bottleneck) for a 1-channel input."""

    def __init__(
        self,
        filters: Sequence[int],
        kernel_size: Sequence[Sequence[int] | int],
        strides: Sequence[Sequence[int] | int],
        norm_name: tuple | str,
        act_name: tuple | str,
        dropout: float | None,
    ) -> None:
        super().__init__()
        in_channels = [1, *filters[:-1]]
        self.levels = nn.ModuleList(
            UnetResBlock(3, cin, cout, kernel, stride, norm_name=norm_name, act_name=act_name, dropout=dropout)
            for cin, cout, kernel, stride in zip(in_channels, filters, kernel_size, strides)
        )

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features: List[torch.Tensor] = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class LCKDNet(nn.Module):
    """Missing-modality segmentation network of LCKD (Wang et al., MICCAI 2023) on MONAI's DynUNet blocks.

    Every MRI sequence is encoded on its own as a 1-channel image, either by one shared encoder
    (sequences folded into the batch, as the official LCKD code does) or by one encoder per sequence.
    Features of absent sequences are replaced by the mean of the present sequences' features, at every
    level (``fill="all_levels"``) or at the bottleneck only (``fill="bottleneck"``, the official code).
    At every level a 1x1x1 convolution fuses the N sequences' features, and a DynUNet decoder with skip
    connections produces one logit channel per region (TC, WT, ET).

    Args:
        modalities: names of the input channels, in order; their count is the number of input channels.
        out_channels: number of output region channels.
        kernel_size: convolution kernel size per level, as in ``monai.networks.nets.DynUNet``.
        strides: convolution stride per level (the first is usually 1), as in DynUNet.
        filters: number of feature channels per level of each encoder and of the decoder.
        shared_encoder: one encoder for all sequences (``True``) or one per sequence (``False``); the command
            line's ``"false"`` is false (:func:`bundle.flags.flag`).
        fill: where absent sequences get the mean of present ones: one of :data:`FILL_MODES`.
        norm_name: normalization layer of the residual blocks.
        act_name: activation of the residual blocks.
        dropout: dropout probability in the residual blocks.
        preprocessing: how the training data was prepared (grid, window, orientation, intensity normalisation,
            crop, label convention; :func:`bundle.networks.model_preprocessing`), kept in the record so that
            inference prepares its input the same way. Not a network key: loaded weights bring their own.

    The network carries its record in its ``state_dict`` (PyTorch's extra state, key ``_extra_state``):
    the constructor keys above, the elected teacher set (``record["teachers"]``, set by the election) and,
    after a federated election, the validation cases of each site behind it (``record["federated"]``), so a
    saved ``state_dict`` is all it takes to rebuild and serve the model
    (:func:`bundle.networks.network_from_record`). Loading weights whose record names other keys is
    refused with the differences.

    In ``eval()`` mode ``forward`` returns the logits ``(B, out_channels, H, W, D)``; in ``train()`` mode
    it returns ``(logits, bottleneck, mask)``: the per-sequence bottleneck features before fill
    ``(B, N, C, h, w, d)`` and the boolean mask ``(B, N)`` used, for the distillation loss.

    Example:
        >>> net = LCKDNet(filters=(8, 16, 32, 64)).eval()
        >>> x = torch.randn(2, 4, 32, 32, 32)
        >>> mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
        >>> net(x, mask).shape
        torch.Size([2, 3, 32, 32, 32])
    """

    def __init__(
        self,
        modalities: Sequence[str] = DEFAULT_MODALITIES,
        out_channels: int = len(NETWORK_REGIONS),
        kernel_size: Sequence[Sequence[int] | int] = (3, 3, 3, 3),
        strides: Sequence[Sequence[int] | int] = (1, 2, 2, 2),
        filters: Sequence[int] = (16, 32, 64, 128),
        shared_encoder: bool | str = True,
        fill: str = "all_levels",
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
        act_name: tuple | str = ("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        dropout: float | None = None,
        preprocessing: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.modalities = check_modalities(modalities)
        check_levels(filters, kernel_size, strides)
        shared_encoder = flag(shared_encoder, "shared_encoder")
        check_fill(fill)
        if out_channels < 1:
            raise InputError(f"out_channels must be at least 1, got {out_channels}.")
        self.record = {
            "network": {
                "modalities": list(self.modalities),
                "out_channels": int(out_channels),
                "kernel_size": plain(kernel_size),
                "strides": plain(strides),
                "filters": [int(f) for f in filters],
                "shared_encoder": shared_encoder,
                "fill": fill,
            },
            "teachers": None,
            "federated": None,
            "preprocessing": json.loads(json.dumps(dict(preprocessing))) if preprocessing else None,
        }
        self.num_modalities = len(self.modalities)
        self.filters = [int(f) for f in filters]
        self.strides = list(strides)
        self.shared_encoder = shared_encoder
        self.fill_all_levels = fill == "all_levels"
        self.divisor: List[int] = downsampling(strides)

        num_encoders = 1 if self.shared_encoder else self.num_modalities
        self.encoders = nn.ModuleList(
            _Encoder(self.filters, kernel_size, strides, norm_name, act_name, dropout) for _ in range(num_encoders)
        )
        self.fusions = nn.ModuleList(
            get_conv_layer(3, self.num_modalities * f, f, kernel_size=1, stride=1, conv_only=True) for f in self.filters
        )
        self.upsamples = nn.ModuleList(
            UnetUpBlock(
                3,
                self.filters[level + 1],
                self.filters[level],
                kernel_size[level + 1],
                strides[level + 1],
                upsample_kernel_size=strides[level + 1],
                norm_name=norm_name,
                act_name=act_name,
                dropout=dropout,
                trans_bias=False,
            )
            for level in reversed(range(len(self.filters) - 1))
        )
        self.output_block = UnetOutBlock(3, self.filters[0], out_channels, dropout=dropout)

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Per-sequence features at every level, each ``(B, N, C_level, h, w, d)``."""
        batch, num = x.shape[0], x.shape[1]
        if self.shared_encoder:
            folded = self.encoders[0](x.reshape(batch * num, 1, x.shape[2], x.shape[3], x.shape[4]))
            return [f.reshape(batch, num, f.shape[1], f.shape[2], f.shape[3], f.shape[4]) for f in folded]
        per_modality: List[List[torch.Tensor]] = []
        for index, encoder in enumerate(self.encoders):
            per_modality.append(encoder(x[:, index : index + 1]))
        return [torch.stack([levels[i] for levels in per_modality], dim=1) for i in range(len(self.filters))]

    def decode(self, features: List[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Mean-fill absent sequences, fuse each level and decode to logits.

        Args:
            features: output of :meth:`encode`.
            mask: boolean ``(B, N)`` or ``(1, N)`` (broadcast over the batch, as sliding-window
                inference stacks windows of one case), True where the sequence is present.
        """
        weight = mask.to(features[0].dtype)[:, :, None, None, None, None]
        fused: List[torch.Tensor] = []
        last = len(self.filters) - 1
        for level, fusion in enumerate(self.fusions):
            feature = features[level]
            if self.fill_all_levels or level == last:
                feature = _mean_fill(feature, weight)
            fused.append(fusion(feature.flatten(1, 2)))
        x = fused[last]
        for index, upsample in enumerate(self.upsamples):
            x = upsample(x, fused[last - 1 - index])
        return self.output_block(x)

    @torch.jit.unused
    def get_extra_state(self) -> torch.Tensor:
        """The record saved with the weights, ``{"network": constructor keys, "teachers": region -> sequence}``,
        ``"preprocessing"`` when the network was given one and ``"federated"`` when a federated election set it, as
        UTF-8 JSON in a uint8 tensor (a tensor, so that tracing and ONNX export, which expect tensors, still work)."""
        record = {"network": dict(self.record["network"]), "teachers": self.record["teachers"]}
        for key in ("federated", "preprocessing"):
            if self.record[key] is not None:
                record[key] = self.record[key]
        return encode_record(record)

    @torch.jit.unused
    def set_extra_state(self, state: Any) -> None:
        """Take the teacher set, preprocessing (and federated case counts) of loaded weights, after checking they
        were trained with this network's keys."""
        state = decode_record(state)
        recorded = dict(state.get("network", {}))
        own = self.record["network"]
        differing = [key for key, value in recorded.items() if key in own and own[key] != value]
        if differing:
            raise InputError(
                "these weights were trained with "
                + ", ".join(f"{key}={recorded[key]}" for key in differing)
                + " but the network is built with "
                + ", ".join(f"{key}={own[key]}" for key in differing)
                + "; pass the trained values, or build it from the checkpoint (bundle.networks.network_from_record)."
            )
        self.record["teachers"] = dict(state["teachers"]) if state.get("teachers") else None
        self.record["federated"] = state.get("federated")
        self.record["preprocessing"] = state.get("preprocessing")

    @torch.jit.unused
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)
        if prefix + "_extra_state" in missing_keys:  # weights saved before networks carried a record
            missing_keys.remove(prefix + "_extra_state")

    def forward(
        self, x: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """
        Args:
            x: ``(B, N, H, W, D)``, one channel per sequence in ``modalities`` order; an absent sequence
                may be all zeros.
            mask: boolean ``(B, N)`` (or ``(1, N)``), True where the sequence is present. ``None`` infers
                it as the channels that are not all zero, so clients that pass only an image work.
        """
        mask = self.check_input(x, mask)
        x = x * mask.to(x.dtype)[:, :, None, None, None]
        features = self.encode(x)
        logits = self.decode(features, mask)
        if self.training:
            return logits, features[-1], mask.expand(x.shape[0], -1)
        return logits

    def forward_combinations(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Logits under each modality combination of ``masks``, encoding ``x`` only once.

        Each sequence's features depend on that sequence alone (the encoder normalises per sample and
        channel), so the features of a combination are those of the full input with the absent
        sequences replaced: by the mean fill at every level (``fill="all_levels"``), or at the
        bottleneck and by the features of an all-zero input elsewhere (``fill="bottleneck"``). Only
        the fusion and the decoder run once per combination; the result equals calling
        ``forward(x * mask, mask)`` per combination.

        Args:
            x: ``(B, N, H, W, D)`` with every sequence to combine present.
            masks: boolean ``(K, N)``, one combination per row, each with a present sequence.

        Returns:
            ``(B, K * out_channels, H, W, D)``: combination ``k`` in channels ``k * out_channels ...``.

        Example:
            >>> net = LCKDNet(filters=[4, 8, 16], kernel_size=[3, 3, 3], strides=[1, 2, 2]).eval()
            >>> net.forward_combinations(torch.randn(1, 4, 16, 16, 16), torch.eye(4, dtype=torch.bool)).shape
            torch.Size([1, 12, 16, 16, 16])
        """
        if masks.dim() != 2 or masks.shape[1] != self.num_modalities:
            raise InputError(
                f"masks must have shape (K, {self.num_modalities}), one row per combination, got {list(masks.shape)}."
            )
        self.check_input(x, masks[:1])
        masks = masks.to(device=x.device, dtype=torch.bool)
        features = self.encode(x)
        zero_features: List[torch.Tensor] = []
        if not self.fill_all_levels:
            zero_features = self.encode(torch.zeros_like(x[:1]))
        outputs: List[torch.Tensor] = []
        for k in range(masks.shape[0]):
            mask = masks[k : k + 1]
            combination = features
            if not self.fill_all_levels:
                present = mask[:, :, None, None, None, None]
                combination = [torch.where(present, f, z) for f, z in zip(features, zero_features)]
            outputs.append(self.decode(combination, mask))
        return torch.cat(outputs, dim=1)

    def check_input(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Validate shapes and return the boolean mask (inferred from non-zero channels when ``None``)."""
        if x.dim() != 5 or x.shape[1] != self.num_modalities:
            raise InputError(
                f"LCKDNet expects input (batch, {self.num_modalities}, H, W, D) with one channel per modality "
                f"{list(self.modalities)}, got shape {list(x.shape)}."
            )
        for axis in range(3):
            if x.shape[2 + axis] % self.divisor[axis] != 0:
                raise InputError(
                    f"spatial size {list(x.shape[2:])} must be divisible by {self.divisor} per axis (the network's "
                    "downsampling: the product of its strides); pad the image or choose a patch_size that is a multiple of it."
                )
        if mask is None:
            return presence_mask(x)
        if mask.dim() != 2 or mask.shape[1] != self.num_modalities or mask.shape[0] not in (1, x.shape[0]):
            raise InputError(
                f"mask must have shape ({x.shape[0]}, {self.num_modalities}) or (1, {self.num_modalities}), "
                f"one flag per modality {list(self.modalities)}, got {list(mask.shape)}."
            )
        mask = mask.to(device=x.device, dtype=torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise InputError(
                "every sample needs at least one present modality, got a mask row with none; "
                "drop that sample, or pass mask=None to infer the mask from the non-zero channels."
            )
        return mask


def _mean_fill(feature: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Replace absent sequences' features ``(B, N, C, ...)`` by the mean of the present ones'."""
    count = weight.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (feature * weight).sum(dim=1, keepdim=True) / count
    return feature * weight + mean * (1.0 - weight)


def check_fill(fill: Any) -> str:
    """``fill`` as :class:`LCKDNet` takes it (also checked by ``bundle.settings`` before a workflow reads data).

    Raises:
        InputError: naming the allowed values.
    """
    return check_choice("fill", fill, FILL_MODES)


def check_levels(
    filters: Sequence[int], kernel_size: Sequence[Sequence[int] | int], strides: Sequence[Sequence[int] | int]
) -> None:
    """One filter width, kernel size and stride per level, at least two levels (as :class:`LCKDNet` needs; also
    checked by ``bundle.settings`` before a workflow reads data).

    Raises:
        InputError: naming the lengths given.
    """
    if len(kernel_size) != len(strides) or len(strides) < 2:
        raise InputError(
            f"kernel_size and strides must have the same length (one entry per level, at least 2), "
            f"got kernel_size={list(kernel_size)} and strides={list(strides)}."
        )
    if len(filters) != len(strides) or any(int(f) < 1 for f in filters):
        raise InputError(
            f"filters must give one positive width per level ({len(strides)} levels from strides), "
            f"got filters={list(filters)}."
        )


def downsampling(strides: Sequence[Sequence[int] | int]) -> List[int]:
    """Per axis, the product of the strides: what every spatial size the network sees must be a multiple of (the
    one divisibility rule, for the settings' patch check, the network's input check and the inference window).

    Example:
        >>> downsampling([1, 2, 2, [2, 2, 1]])
        [8, 8, 4]
    """
    factors = [1, 1, 1]
    for stride in strides:
        for axis in range(3):
            factors[axis] *= int(stride[axis]) if isinstance(stride, Sequence) else int(stride)
    return factors
