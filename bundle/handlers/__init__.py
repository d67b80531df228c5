from bundle.handlers.checkpoint import AtomicCheckpointSaver, AtomicDiskSaver, latest_checkpoint, resume_from_latest
from bundle.handlers.combinations import case_combination_metrics, combination_dice
from bundle.handlers.election import (
    ElectionHandler,
    bootstrap_win_rate,
    elect_teachers,
    format_election,
    read_teachers,
    update_metadata,
)
from bundle.handlers.evaluation import (
    CombinationEvaluator,
    format_summary_markdown,
    summarize_combinations,
    write_combination_reports,
)
from bundle.handlers.report import (
    LOSS_TERMS,
    format_region_dice,
    format_teachers,
    log_teachers,
    log_validation_summary,
    loss_terms,
    region_dice,
)
from bundle.handlers.tracking import TaggedMLFlowHandler

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "latest_checkpoint",
    "resume_from_latest",
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
    "read_teachers",
    "update_metadata",
    "LOSS_TERMS",
    "format_region_dice",
    "format_teachers",
    "log_teachers",
    "log_validation_summary",
    "loss_terms",
    "region_dice",
    "TaggedMLFlowHandler",
]
