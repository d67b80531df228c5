"""Cross-modal knowledge distillation (CKD) loss of LCKD and the total training loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.losses import DiceCELoss
from torch import nn

from bundle.errors import InputError
from bundle.modalities import DEFAULT_MODALITIES, check_modalities, check_teachers

__all__ = ["CKDLoss", "LCKDLoss"]


class CKDLoss(nn.Module):
    """Mean L1 distance from every present student sequence's features to every present teacher's.

    For each sample, each teacher ``t`` present and each other sequence ``s`` present, the pair adds
    ``mean |f_s - detach(f_t)|``; the loss is the mean over all such pairs in the batch (zero when
    there is none). The teacher features are detached, as in the official LCKD code, so the teacher
    is not pulled towards its students.

    Example:
        >>> loss = CKDLoss()
        >>> features = torch.randn(2, 1, 8, 2, 2, 2).expand(2, 4, 8, 2, 2, 2)  # every student equals its teacher
        >>> mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
        >>> float(loss(features, mask, torch.tensor([2])))
        0.0
    """

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
        return (distance * pairs).sum() / pairs.sum().clamp(min=1.0)


class LCKDLoss(nn.Module):
    """Total LCKD training loss: Dice + BCE on the sigmoid region channels + ``ckd_weight`` x CKD.

    Takes the network's training output ``(logits, bottleneck, mask)`` (see ``LCKDNet``) or plain
    logits (then no CKD). CKD is off until a teacher set is given with :meth:`set_teachers`, which
    the teacher election does. The last iteration's terms are kept in :attr:`last_terms` and
    :meth:`attach` copies them into the trainer's output as ``seg_loss`` and ``ckd_loss`` for logging.

    Args:
        modalities: sequence names in channel order.
        ckd_weight: weight of the distillation term (0.1 in the official code); 0 turns CKD off.
        seg_loss: segmentation loss; default ``DiceCELoss(sigmoid=True)``.
        teachers: optional initial teacher set, region -> modality.
    """

    def __init__(
        self,
        modalities: Sequence[str] = DEFAULT_MODALITIES,
        ckd_weight: float = 0.1,
        seg_loss: nn.Module | None = None,
        teachers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if ckd_weight < 0:
            raise InputError(f"ckd_weight must be >= 0 (0 turns distillation off), got {ckd_weight}.")
        self.modalities = check_modalities(modalities)
        self.ckd_weight = float(ckd_weight)
        self.seg_loss = seg_loss if seg_loss is not None else DiceCELoss(sigmoid=True)
        self.ckd = CKDLoss()
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
