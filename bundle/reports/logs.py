"""Readable summaries for the log: per-region Dice, the teacher set, the election table."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from bundle.conventions import REPORT_REGIONS

__all__ = [
    "region_dice",
    "format_region_dice",
    "format_teachers",
    "log_teachers",
    "log_validation_summary",
    "format_election",
]

logger = logging.getLogger(__name__)


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


def log_validation_summary(
    evaluator, elector=None, model_path: str | os.PathLike = "models/model.pt"
) -> dict[str, float]:
    """Log the last validation Dice of ``evaluator`` (a MONAI ``SupervisedEvaluator``), the model kept in
    ``model_path`` (its epoch, the selection metric it was kept by, its teachers) and the last election when the kept
    model does not carry it.

    Args:
        evaluator: the validation engine, after training.
        elector: the training's :class:`bundle.handlers.ElectionHandler`, if any.
        model_path: where the selected weights are.

    Returns:
        The last validation's Dice per region.
    """
    metrics = evaluator.state.metrics or {}
    dice = region_dice(metrics)
    logger.info(f"validation Dice (all modalities), last: {format_region_dice(dice)}")
    if "val_combinations_dice" in metrics:
        logger.info(f"mean Dice over every modality combination, last: {metrics['val_combinations_dice']:.4f}")
    if elector is None:
        return dice
    kept = (elector.model_election or {}).get("model")
    if kept:
        selected = f" ({kept['metric']} {kept['value']:.4f})" if "metric" in kept else ""
        logger.info(
            f"{model_path}: the weights of epoch {kept['epoch']}{selected}, teachers {format_teachers(elector.model_teachers)}"
        )
        last = elector.result
        if last and last.get("elected_at") != elector.model_election.get("elected_at"):
            logger.info(
                f"the last election (epoch {last['elected_at'].get('epoch')}: {format_teachers(last.get('teachers'))}) "
                "came after those weights; metadata.json keeps it as lckd.last_election"
            )
    else:
        log_teachers(elector.teachers)
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


def format_election(result: Mapping[str, Any]) -> str:
    """A table of the single-modality Dice, the teachers and their win rates; undecided regions say so."""
    modalities = result["modalities"]
    width = max(7, *(len(m) + 2 for m in modalities))
    lines = ["region" + "".join(f"{m:>{width}}" for m in modalities) + "   teacher  win rate  compared on"]
    paired = result.get("paired_cases", {})
    undecided = result.get("undecided", [])
    for region in REPORT_REGIONS:
        scores = result["election_dice"][region]
        cells = "".join(f"{'n/a' if scores[m] is None else f'{scores[m]:.3f}':>{width}}" for m in modalities)
        teacher = result["teachers"].get(region)
        rate = result.get("win_rate", {}).get(region, {}).get(teacher)
        if region in undecided:
            verdict = f"undecided (no case holds {region}; {'kept ' + teacher if teacher else 'no teacher'})"
        else:
            verdict = f"{teacher:<8} {'' if rate is None else f'{rate:.2f}':<9}"
            if region in paired:
                count = paired[region]
                verdict += f" {count} cases with every sequence" if count else " each sequence's own cases"
        lines.append(f"{region:<6}{cells}   {verdict}")
    return "\n".join(lines)
