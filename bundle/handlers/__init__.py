from bundle.handlers.report import LOSS_TERMS, format_region_dice, log_validation_summary, loss_terms, region_dice

__all__ = ["LOSS_TERMS", "format_region_dice", "log_validation_summary", "loss_terms", "region_dice"]
