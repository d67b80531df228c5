"""Ignite handlers the bundle adds to MONAI's: checkpoints, modality dropping, the teacher election, model
selection, stopping on a non-finite loss, error pass-through, MLflow tags and the logged loss terms."""

from bundle.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    latest_checkpoint,
    non_finite_entries,
    resume_from_latest,
    set_aside,
)
from bundle.handlers.dropping import DROPPING_SCHEDULES, ModalityDropping, draw_kept_sequences
from bundle.handlers.election import ElectionHandler
from bundle.handlers.guards import ReraiseErrors, StopOnNonFiniteLoss, batch_cases
from bundle.handlers.selection import (
    SELECTION_METRICS,
    CombinationDiceHandler,
    best_model_saver,
    region_dice_metrics,
    selection_metric,
)
from bundle.handlers.stats import LOSS_TERMS, loss_terms
from bundle.handlers.tracking import TaggedMLFlowHandler

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "non_finite_entries",
    "latest_checkpoint",
    "resume_from_latest",
    "set_aside",
    "DROPPING_SCHEDULES",
    "ModalityDropping",
    "draw_kept_sequences",
    "ElectionHandler",
    "ReraiseErrors",
    "StopOnNonFiniteLoss",
    "batch_cases",
    "SELECTION_METRICS",
    "CombinationDiceHandler",
    "selection_metric",
    "best_model_saver",
    "region_dice_metrics",
    "LOSS_TERMS",
    "loss_terms",
    "TaggedMLFlowHandler",
]
