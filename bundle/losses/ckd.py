"""Cross-modal knowledge distillation (CKD) loss of LCKD and the total training loss."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.losses import DiceLoss
from torch import nn

from bundle.conventions import DEFAULT_MODALITIES, check_modalities, check_teachers
from bundle.errors import InputError, check_choice

__all__ = ["CKD_REDUCTIONS", "check_ckd_reduction", "check_ckd_weight", "CKDLoss", "RegionDiceBCELoss", "LCKDLoss"]

CKD_REDUCTIONS = ("sum", "mean")


def check_ckd_reduction(reduction: Any) -> str:
    """``ckd_reduction`` as :class:`CKDLoss` takes it (also checked by ``bundle.settings`` before a workflow reads
    data)."""
    return check_choice("ckd_reduction", reduction, CKD_REDUCTIONS)


def check_ckd_weight(ckd_weight: Any) -> float:
    """``ckd_weight`` as :class:`LCKDLoss` takes it (also checked by ``bundle.settings`` before a workflow reads data).

    Raises:
        InputError: for anything but a finite number >= 0.
    """
    if isinstance(ckd_weight, bool) or not isinstance(ckd_weight, (int, float)) or not 0 <= ckd_weight < math.inf:
        raise InputError(f"ckd_weight must be a number >= 0 (0 turns distillation off), got {ckd_weight!r}.")
    return float(ckd_weight)


class CKDLoss(nn.Module):
    """L1 distance from every present student sequence's features to every present teacher's, summed over pairs.

    For each sample, each teacher ``t`` present and each other sequence ``s`` present, the pair adds
    ``mean |f_s - detach(f_t)|`` (mean over channels and voxels). With ``reduction="sum"`` (default) the
    pairs' distances are summed, as in the LCKD paper's equation and the official code, and the sums
    averaged over the batch; ``"mean"`` averages over all pairs of the batch instead (1/pairs as strong).
    The teacher features are detached, as in the official code, so the teacher is not pulled towards
    its students. Zero when there is no pair.

    Args:
        reduction: ``"sum"`` over (student, teacher) pairs or ``"mean"`` over them.

    Example:
        >>> loss = CKDLoss()
        >>> features = torch.zeros(1, 3, 1, 1, 1, 1)
        >>> features[0, 1] = 1.0  # one teacher (index 0), two students at L1 distance 1 and 0
        >>> float(loss(features, torch.tensor([[True, True, True]]), torch.tensor([0])))
        1.0
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        self.reduction = check_ckd_reduction(reduction)

    def forward(self, features: torch.Tensor, mask: torch.Tensor, teachers: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: per-sequence features ``(B, N, C, ...)``.
            mask: bool ``(B, N)``, True where the sequence is present.
            teachers: indices of the teacher sequences, ``(T,)`` long.

        Returns:
            A scalar tensor.
        """
        if teachers.numel() == 0:
            return features.sum() * 0.0
        teachers = teachers.to(features.device)
        mask = mask.to(features.device)
        teacher = features[:, teachers].detach()  # (B, T, C, ...)
        distance = (features[:, :, None] - teacher[:, None]).abs().flatten(3).mean(dim=3)  # (B, N, T)
        not_self = torch.arange(features.shape[1], device=features.device)[:, None] != teachers[None, :]
        pairs = (mask[:, :, None] & mask[:, teachers][:, None, :] & not_self[None]).to(distance.dtype)
        total = (distance * pairs).sum()
        if self.reduction == "sum":
            return total / features.shape[0]
        return total / pairs.sum().clamp(min=1.0)


class RegionDiceBCELoss(nn.Module):
    """Dice averaged over the region channels plus a per-channel sigmoid BCE summed over them.

    The regions (TC, WT, ET) overlap, so each channel is its own binary problem: MONAI's ``DiceCELoss``
    would apply a softmax cross-entropy across channels when there are several. The terms follow the
    official LCKD code (``DiceLoss4BraTS`` + ``BCELoss4BraTS``): Dice is MONAI's ``DiceLoss(sigmoid=True)``
    (per sample and channel, then averaged); BCE is ``BCEWithLogitsLoss`` (mean over voxels) of each
    channel, summed over the channels.

    Example:
        >>> loss = RegionDiceBCELoss()
        >>> logits, target = torch.full((1, 3, 4, 4, 4), 20.0), torch.zeros(1, 3, 4, 4, 4)
        >>> round(float(loss(logits, target)), 2)  # Dice 1 (nothing right) + 3 channels x BCE 20
        61.0
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True)
        self.bce = nn.BCEWithLogitsLoss(reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: ``(B, R, ...)`` region logits.
            target: ``(B, R, ...)`` binary region masks.

        Returns:
            A scalar tensor.
        """
        target = target.to(logits.dtype)
        bce = self.bce(logits, target).transpose(0, 1).flatten(1).mean(dim=1).sum()
        return self.dice(logits, target) + bce


class LCKDLoss(nn.Module):
    """Total LCKD training loss: Dice + BCE on the sigmoid region channels + ``ckd_weight`` x CKD.

    Takes the network's training output ``(logits, bottleneck, mask)`` (see ``LCKDNet``) or plain
    logits (then no CKD). CKD is off until a teacher set is given with :meth:`set_teachers`, which
    the teacher election does. The last iteration's terms are kept in :attr:`last_terms` and
    :meth:`attach` copies them into the trainer's output as ``seg_loss`` and ``ckd_loss`` for logging.

    Args:
        modalities: sequence names in channel order.
        ckd_weight: weight of the distillation term (0.1 in the official code); 0 turns CKD off.
        ckd_reduction: ``"sum"`` (the paper's equation) or ``"mean"`` over (student, teacher) pairs.
        seg_loss: segmentation loss; default :class:`RegionDiceBCELoss`.
        teachers: optional initial teacher set, region -> modality.
    """

    def __init__(
        self,
        modalities: Sequence[str] = DEFAULT_MODALITIES,
        ckd_weight: float = 0.1,
        ckd_reduction: str = "sum",
        seg_loss: nn.Module | None = None,
        teachers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.ckd_weight = check_ckd_weight(ckd_weight)
        self.modalities = check_modalities(modalities)
        self.seg_loss = seg_loss if seg_loss is not None else RegionDiceBCELoss()
        self.ckd = CKDLoss(ckd_reduction)
        self.teachers: dict[str, str] | None = None
        self.teacher_index = torch.zeros(0, dtype=torch.long)
        self.last_terms: dict[str, float] = {}
        self.set_teachers(teachers)

    def set_teachers(self, teachers: Mapping[str, str] | None) -> None:
        """Use ``teachers`` (region -> modality) from now on; ``None`` turns CKD off."""
        if teachers is None:
            self.teachers = None
            self.teacher_index = torch.zeros(0, dtype=torch.long)
            return
        self.teachers = check_teachers(teachers, self.modalities)
        indices = sorted({self.modalities.index(m) for m in teachers.values()})
        self.teacher_index = torch.tensor(indices, dtype=torch.long)

    def forward(self, output: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            logits, bottleneck, mask = output, None, None
        else:
            logits, bottleneck, mask = output
        seg = self.seg_loss(logits, target)
        if bottleneck is None or self.ckd_weight == 0 or self.teachers is None:
            ckd = seg.new_zeros(())
        else:
            ckd = self.ckd(bottleneck, mask, self.teacher_index)
        self.last_terms = {"seg_loss": float(seg.detach()), "ckd_loss": float(ckd.detach())}
        return seg + self.ckd_weight * ckd

    def attach(self, engine: Engine) -> None:
        """Copy :attr:`last_terms` into ``engine.state.output`` after each loss computation."""

        def _copy_terms(engine: Engine) -> None:
            engine.state.output.update(self.last_terms)

        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, _copy_terms)
