"""Random modality dropping during training: which sequences each training batch keeps."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from bundle.errors import InputError, check_choice

__all__ = ["DROPPING_SCHEDULES", "check_schedule", "draw_kept_sequences", "ModalityDropping"]

DROPPING_SCHEDULES = ("lckd", "uniform15", "none")
"""``lckd``: the official code's (per batch, 1 to N-1 sequences); ``uniform15``: per sample, any non-empty
subset; ``none``: every present sequence."""


def check_schedule(schedule: Any) -> str:
    """``schedule`` (the ``dropping`` setting) as :class:`ModalityDropping` takes it (also checked by
    ``bundle.settings`` before a workflow reads data)."""
    return check_choice("dropping", schedule, DROPPING_SCHEDULES)


def draw_kept_sequences(present: torch.Tensor, schedule: str, rng: np.random.Generator) -> torch.Tensor:
    """Which of each sample's present sequences a training step keeps.

    - ``"lckd"`` (the official LCKD code, ``mode=random``): one draw for the whole batch: a number ``k``
      uniform in ``1 .. N-1`` and a uniformly random set of ``k`` of the ``N`` sequences; the full set
      never occurs. Each sample keeps that set's sequences it has; a sample that has none of them keeps
      one of its own, drawn uniformly (only data with missing sequences gets there).
    - ``"uniform15"``: per sample, a subset drawn uniformly among the ``2**k - 1`` non-empty subsets of
      its ``k`` present sequences (the full set included).
    - ``"none"``: every present sequence.

    Args:
        present: bool ``(B, N)``, True where a sample has the sequence; at least one per row.
        schedule: one of :data:`DROPPING_SCHEDULES`.
        rng: source of the draws.

    Returns:
        bool ``(B, N)``, a non-empty subset of ``present`` per row.

    Example:
        >>> present = torch.ones(2, 4, dtype=torch.bool)
        >>> kept = draw_kept_sequences(present, "lckd", np.random.default_rng(0))
        >>> bool((kept[0] == kept[1]).all()), 1 <= int(kept[0].sum()) <= 3
        (True, True)
    """
    check_schedule(schedule)
    present = present.to(torch.bool).cpu()
    if schedule == "none":
        return present.clone()
    batch, count = present.shape
    kept = torch.zeros_like(present)
    if schedule == "lckd":
        size = int(rng.integers(1, count)) if count > 1 else 1
        chosen = torch.zeros(count, dtype=torch.bool)
        chosen[rng.choice(count, size=size, replace=False)] = True
        kept = present & chosen
    for row in range(batch):
        own = torch.nonzero(present[row]).flatten().tolist()
        if schedule == "uniform15":
            subset = int(rng.integers(1, 2 ** len(own)))
            kept[row, own] = torch.tensor([bool(subset >> bit & 1) for bit in range(len(own))])
        elif not kept[row].any() and own:
            kept[row, own[int(rng.integers(len(own)))]] = True
    return kept


class ModalityDropping:
    """Ignite handler: before each training iteration, drop sequences from the batch by a schedule.

    The batch's ``mask_key`` becomes the kept sequences and the dropped (and absent) channels of
    ``image_key`` become zero, after all augmentation, so a dropped sequence is exactly what a missing
    one looks like to the network. During the first ``warmup_epochs`` epochs every present sequence is
    kept, as the official LCKD recipe trains on complete inputs before random missing sequences. Draws
    are seeded by ``(seed, iteration)``, so a resumed run draws what the uninterrupted run would have.

    Args:
        schedule: one of :data:`DROPPING_SCHEDULES`.
        warmup_epochs: epochs with every present sequence before dropping starts (>= 0).
        seed: of the draws.
        image_key: key of the ``(B, N, ...)`` image in the batch.
        mask_key: key of the ``(B, N)`` presence mask in the batch.
    """

    def __init__(
        self,
        schedule: str = "lckd",
        warmup_epochs: int = 0,
        seed: int = 0,
        image_key: str = "image",
        mask_key: str = "mask",
    ) -> None:
        check_schedule(schedule)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise InputError(
                f"warmup_epochs must be an int >= 0 (0: drop from the first epoch), got {warmup_epochs!r}."
            )
        self.schedule = schedule
        self.warmup_epochs = warmup_epochs
        self.seed = int(seed)
        self.image_key = image_key
        self.mask_key = mask_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def schedule_at(self, epoch: int) -> str:
        """The schedule in force during ``epoch`` (1-based): ``"none"`` during the warm-up."""
        return "none" if epoch <= self.warmup_epochs else self.schedule

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        rng = np.random.default_rng([self.seed, engine.state.iteration])
        kept = draw_kept_sequences(torch.as_tensor(batch[self.mask_key]), self.schedule_at(engine.state.epoch), rng)
        image = batch[self.image_key]
        batch[self.mask_key] = kept.to(torch.as_tensor(batch[self.mask_key]).device)
        batch[self.image_key] = image * kept.to(dtype=image.dtype, device=image.device).reshape(
            *kept.shape, *[1] * (image.dim() - 2)
        )
