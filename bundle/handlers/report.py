"""Readable summaries of per-region validation metrics."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

from bundle.conventions import REPORT_REGIONS

__all__ = [
    "LOSS_TERMS",
    "loss_terms",
    "region_dice",
    "format_region_dice",
    "format_teachers",
    "log_teachers",
    "log_validation_summary",
]

LOSS_TERMS: tuple[str, ...] = ("loss", "seg_loss", "ckd_loss")

logger = logging.getLogger(__name__)


def loss_terms(output: Mapping | Sequence[Mapping]) -> dict[str, float]:
    """Output transform for ``StatsHandler``: the loss terms of a trainer's (decollated) output."""
    first = output[0] if isinstance(output, Sequence) else output
    return {key: float(first[key]) for key in LOSS_TERMS if key in first}


def region_dice(metrics: Mapping[str, float], prefix: str = "val_dice_") -> dict[str, float]:
    """Pick ``{region: dice}`` in report order (ET, TC, WT) from an engine's metrics dict."""
    return {
        region: float(metrics[f"{prefix}{region.lower()}"])
        for region in REPORT_REGIONS
        if f"{prefix}{region.lower()}" in metrics
    }


def format_region_dice(dice: Mapping[str, float]) -> str:
    """``"ET 0.812  TC 0.845  WT 0.903  mean 0.853"``."""
    if not dice:
        return "no region Dice"
    parts = [f"{region} {value:.3f}" for region, value in dice.items()]
    return "  ".join([*parts, f"mean {sum(dice.values()) / len(dice):.3f}"])


def log_validation_summary(evaluator, teachers: Mapping[str, str] | None = None) -> dict[str, float]:
    """Log the last and the best validation Dice of ``evaluator`` (a MONAI ``SupervisedEvaluator``).

    Args:
        evaluator: the validation engine, after training.
        teachers: the elected teacher set to report beside it, if any.

    Returns:
        The last validation's Dice per region.
    """
    metrics = evaluator.state.metrics or {}
    dice = region_dice(metrics)
    best, best_epoch = evaluator.state.best_metric, evaluator.state.best_metric_epoch
    logger.info(f"validation Dice (all modalities), last: {format_region_dice(dice)}")
    if best_epoch >= 0:
        logger.info(f"best all-modality mean Dice {best:.4f} at epoch {best_epoch}")
    if "val_combinations_dice" in metrics:
        logger.info(f"mean Dice over every modality combination, last: {metrics['val_combinations_dice']:.4f}")
    log_teachers(teachers)
    return dice


def format_teachers(teachers: Mapping[str, str] | None) -> str:
    """``"ET->t1ce, TC->t1ce, WT->flair"``, or ``"none elected yet"``."""
    if not teachers:
        return "none elected yet"
    return ", ".join(f"{region}->{modality}" for region, modality in teachers.items())


def log_teachers(teachers: Mapping[str, str] | None, source: str | os.PathLike | None = None) -> None:
    """Log a teacher set (region -> modality) and where it was read from; nothing when there is none."""
    if teachers:
        where = f" ({source})" if source else ""
        logger.info(f"teachers{where}: {format_teachers(teachers)}")
