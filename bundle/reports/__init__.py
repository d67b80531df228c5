"""Reports: the evaluation's tables and files (CSV, Markdown, heatmap), and summaries for the log."""

from bundle.reports.logs import (
    format_election,
    format_region_dice,
    format_teachers,
    log_teachers,
    log_validation_summary,
    region_dice,
)
from bundle.reports.tables import (
    AVERAGE,
    METRICS,
    REPORT_FOLDER,
    csv_bytes,
    format_summary_markdown,
    heatmap_png,
    report_title,
    scoring_note,
    summarize_combinations,
    write_combination_reports,
)

__all__ = [
    "format_election",
    "format_region_dice",
    "format_teachers",
    "log_teachers",
    "log_validation_summary",
    "region_dice",
    "AVERAGE",
    "METRICS",
    "REPORT_FOLDER",
    "report_title",
    "scoring_note",
    "csv_bytes",
    "format_summary_markdown",
    "heatmap_png",
    "summarize_combinations",
    "write_combination_reports",
]
