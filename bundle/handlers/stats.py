"""What the training's StatsHandler, TensorBoard and MLflow handlers log of each iteration: the loss terms."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

__all__ = ["LOSS_TERMS", "loss_terms"]

LOSS_TERMS: tuple[str, ...] = ("loss", "seg_loss", "ckd_loss")

logger = logging.getLogger(__name__)


def loss_terms(output: Mapping | Sequence[Mapping]) -> dict[str, float]:
    """Output transform for ``StatsHandler``: the loss terms of a trainer's (decollated) output."""
    first = output[0] if isinstance(output, Sequence) else output
    return {key: float(first[key]) for key in LOSS_TERMS if key in first}
