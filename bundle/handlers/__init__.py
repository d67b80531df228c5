from bundle.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    CheckedCheckpointLoader,
    latest_checkpoint,
    non_finite_entries,
    resume_from_latest,
)
from bundle.handlers.combinations import (
    BRATS_HD95_PENALTY,
    LESION_HD95_PENALTY,
    case_combination_metrics,
    combination_dice,
    lesion_scores,
    region_scores,
)
from bundle.handlers.dropping import DROPPING_SCHEDULES, ModalityDropping, draw_kept_sequences
from bundle.handlers.election import (
    ElectionHandler,
    bootstrap_win_rate,
    elect_teachers,
    format_election,
    read_metadata,
    read_teachers,
    undecided_regions,
    update_metadata,
)
from bundle.handlers.evaluation import (
    CombinationEvaluator,
    format_summary_markdown,
    summarize_combinations,
    write_combination_reports,
)
from bundle.handlers.guards import ReraiseErrors, StopOnNonFiniteLoss, batch_cases
from bundle.handlers.report import (
    LOSS_TERMS,
    format_region_dice,
    format_teachers,
    log_teachers,
    log_validation_summary,
    loss_terms,
    region_dice,
)
from bundle.handlers.selection import SELECTION_METRICS, CombinationDiceHandler, selection_metric
from bundle.handlers.tracking import TaggedMLFlowHandler

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "CheckedCheckpointLoader",
    "non_finite_entries",
    "latest_checkpoint",
    "resume_from_latest",
    "DROPPING_SCHEDULES",
    "ModalityDropping",
    "draw_kept_sequences",
    "ReraiseErrors",
    "StopOnNonFiniteLoss",
    "batch_cases",
    "BRATS_HD95_PENALTY",
    "region_scores",
    "LESION_HD95_PENALTY",
    "lesion_scores",
    "case_combination_metrics",
    "combination_dice",
    "CombinationEvaluator",
    "format_summary_markdown",
    "summarize_combinations",
    "write_combination_reports",
    "ElectionHandler",
    "bootstrap_win_rate",
    "elect_teachers",
    "format_election",
    "read_metadata",
    "read_teachers",
    "undecided_regions",
    "update_metadata",
    "LOSS_TERMS",
    "format_region_dice",
    "format_teachers",
    "log_teachers",
    "log_validation_summary",
    "loss_terms",
    "region_dice",
    "SELECTION_METRICS",
    "CombinationDiceHandler",
    "selection_metric",
    "TaggedMLFlowHandler",
]
