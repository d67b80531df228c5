"""Does distillation help on this data? The ablation, its per-case statistics and the feature diagnostics."""

from bundle.analysis.ablation import ablate, parse_change, run_bundle
from bundle.analysis.alignment import alignment_table, bottleneck_samples, linear_cka, linear_probe, mean_cosine
from bundle.analysis.efficacy import (
    MIN_CASES,
    average_seeds,
    compare_runs,
    format_efficacy_markdown,
    holm,
    paired_interval,
    read_case_rows,
    write_efficacy_reports,
)

__all__ = [
    "ablate",
    "parse_change",
    "run_bundle",
    "alignment_table",
    "bottleneck_samples",
    "linear_cka",
    "linear_probe",
    "mean_cosine",
    "MIN_CASES",
    "average_seeds",
    "compare_runs",
    "format_efficacy_markdown",
    "holm",
    "paired_interval",
    "read_case_rows",
    "write_efficacy_reports",
]
