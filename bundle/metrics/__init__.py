"""Metrics and statistics the bundle adds to MONAI's: BraTS scoring over modality combinations and the
teacher election's statistics."""

from bundle.metrics.combinations import case_combination_metrics, combination_dice
from bundle.metrics.scoring import SCORING_RULES, binary_dice, metric_names, score_label_maps
from bundle.metrics.teacher_choice import (
    LOW_WIN_RATE,
    MIN_SITE_CASES,
    bootstrap_win_rate,
    combine_site_elections,
    elect_teachers,
    paired_cases,
    site_election_summary,
    undecided_regions,
)

__all__ = [
    "case_combination_metrics",
    "combination_dice",
    "SCORING_RULES",
    "metric_names",
    "score_label_maps",
    "binary_dice",
    "LOW_WIN_RATE",
    "MIN_SITE_CASES",
    "paired_cases",
    "bootstrap_win_rate",
    "elect_teachers",
    "undecided_regions",
    "site_election_summary",
    "combine_site_elections",
]
