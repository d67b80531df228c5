from bundle.handlers.combinations import combination_dice
from bundle.handlers.election import ElectionHandler, bootstrap_win_rate, elect_teachers, format_election, update_metadata
from bundle.handlers.report import LOSS_TERMS, format_region_dice, log_validation_summary, loss_terms, region_dice

__all__ = [
    "combination_dice",
    "ElectionHandler",
    "bootstrap_win_rate",
    "elect_teachers",
    "format_election",
    "update_metadata",
    "LOSS_TERMS",
    "format_region_dice",
    "log_validation_summary",
    "loss_terms",
    "region_dice",
]
