"""Compare two trainings case by case over the 15 modality combinations: does a change (CKD) help?

Both runs are evaluated on the same cases; per combination and region the Dice difference is averaged
over cases, with a paired t 95 % interval (it keeps its coverage at small numbers of cases, where a
percentile bootstrap is too narrow) and a paired t-test. The p-values of all combination x region cells
are corrected together (Holm), so a verdict is "helps" or "hurts" only when the corrected p is below
0.05; with fewer than :data:`MIN_CASES` cases there is no verdict. Runs repeated with several seeds are
averaged per case first (:func:`average_seeds`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from bundle.conventions import REPORT_REGIONS
from bundle.errors import InputError
from bundle.io import write_files
from bundle.reports.tables import csv_bytes, heatmap_png

__all__ = [
    "MIN_CASES",
    "paired_interval",
    "holm",
    "average_seeds",
    "read_case_rows",
    "compare_runs",
    "format_efficacy_markdown",
    "write_efficacy_reports",
]

HELPS, HURTS, UNCLEAR, TOO_FEW = "helps", "hurts", "no clear effect", "too few cases"
MIN_CASES = 5
"""Below this many paired cases a cell gets no verdict: an interval from 1 or 2 cases says nothing."""
ALPHA = 0.05


def paired_interval(differences: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean of paired per-case differences, its paired t interval and the two-sided t-test p-value.

    Args:
        differences: one value per case (run A minus run B); NaNs are dropped.
        level: coverage of the interval.

    Returns:
        ``(mean, low, high, p)``; the interval and p are NaN with fewer than 2 cases, and a constant
        non-zero difference has a zero-width interval and p 0.

    Example:
        >>> mean, low, high, p = paired_interval([0.1, 0.12, 0.08, 0.11, 0.09])
        >>> round(mean, 3), low > 0, p < 0.01
        (0.1, True, True)
    """
    values = np.asarray(differences, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan, math.nan
    spread = float(values.std(ddof=1)) / math.sqrt(values.size)
    if spread == 0:
        return mean, mean, mean, 1.0 if mean == 0 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, df=values.size - 1)) * spread
    p = float(2 * stats.t.sf(abs(mean) / spread, df=values.size - 1))
    return mean, mean - half, mean + half, p


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order); NaN stays NaN and does not count as a test.

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, math.nan])]
        [0.03, 0.06, 0.06, nan]
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[index] = running
    return adjusted


def average_seeds(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One evaluation's rows from several seeds' evaluations: each metric averaged per (case, combination).

    Args:
        runs: the ``combinations.csv`` rows of each seed's run, all on the same cases.

    Returns:
        Rows in the order of the first run; NaN where every seed is NaN.
    """
    if len(runs) == 1:
        return [dict(row) for row in runs[0]]
    index = [{(row["case"], row["combination"]): row for row in rows} for rows in runs]
    averaged = []
    for row in runs[0]:
        key = (row["case"], row["combination"])
        merged = dict(row)
        for name, value in row.items():
            if isinstance(value, float):
                values = np.array([run[key][name] for run in index if key in run], dtype=float)
                merged[name] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        averaged.append(merged)
    return averaged


def read_case_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of an evaluation's ``combinations.csv`` with numbers as floats."""
    if not Path(path).is_file():
        raise InputError(f"{path} does not exist; run configs/evaluate.json for that model first.")
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for key, value in row.items():
            if key.startswith(("dice_", "hd95_", "lesion_")):
                row[key] = float(value) if value not in ("", "nan") else math.nan
    return rows


def compare_runs(
    rows_a: Sequence[dict[str, Any]],
    rows_b: Sequence[dict[str, Any]],
    names: tuple[str, str] = ("with CKD", "without CKD"),
) -> list[dict[str, Any]]:
    """Per combination and region: mean Dice of run A and B over the shared cases, A - B, its paired t 95 %
    interval, the t-test p-value and its Holm correction over all cells.

    Args:
        rows_a, rows_b: per case x combination rows of two evaluations (``combinations.csv``).
        names: what runs A and B are, used as column names.

    Returns:
        One entry per combination (in the order of ``rows_a``) and region with ``verdict`` "helps" or
        "hurts" (Holm-corrected p < 0.05), "no clear effect", or "too few cases" (under :data:`MIN_CASES`).

    Raises:
        InputError: when the two evaluations share no case.
    """
    index_b = {(row["case"], row["combination"]): row for row in rows_b}
    pairs = [
        (row, index_b[(row["case"], row["combination"])])
        for row in rows_a
        if (row["case"], row["combination"]) in index_b
    ]
    if not pairs:
        raise InputError("the two evaluations share no (case, combination): evaluate both models on the same split.")
    entries = []
    for combination in dict.fromkeys(row["combination"] for row, _ in pairs):
        selected = [(a, b) for a, b in pairs if a["combination"] == combination]
        for region in REPORT_REGIONS:
            key = f"dice_{region}"
            a = np.array([pair[0][key] for pair in selected], dtype=float)
            b = np.array([pair[1][key] for pair in selected], dtype=float)
            both = np.isfinite(a) & np.isfinite(b)
            mean, low, high, p = paired_interval(a[both] - b[both])
            entries.append(
                {
                    "combination": combination,
                    "region": region,
                    "split": selected[0][0].get("split", "not recorded"),
                    "cases": int(both.sum()),
                    f"dice {names[0]}": float(a[both].mean()) if both.any() else math.nan,
                    f"dice {names[1]}": float(b[both].mean()) if both.any() else math.nan,
                    "difference": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "p": p,
                }
            )
    testable = [entry["p"] if entry["cases"] >= MIN_CASES else math.nan for entry in entries]
    for entry, adjusted in zip(entries, holm(testable)):
        entry["p_holm"] = adjusted
        if entry["cases"] < MIN_CASES:
            entry["verdict"] = TOO_FEW
        elif adjusted < ALPHA:
            entry["verdict"] = HELPS if entry["difference"] > 0 else HURTS
        else:
            entry["verdict"] = UNCLEAR
    return entries


def _run_names(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The names of runs A and B, read back from the ``dice <name>`` columns of :func:`compare_runs`."""
    return [key[len("dice ") :] for key in entries[0] if key.startswith("dice ")] if entries else ["A", "B"]


def format_efficacy_markdown(entries: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one row per combination, per region ``A - B [low, high]`` and a verdict mark."""
    marks = {HELPS: " ▲", HURTS: " ▼", UNCLEAR: "", TOO_FEW: " (too few cases)"}
    names = _run_names(entries)
    cases = max((entry["cases"] for entry in entries), default=0)
    splits = ", ".join(dict.fromkeys(str(entry.get("split", "not recorded")) for entry in entries))
    lines = [
        f"Split: {splits}.",
        "",
        f"Dice difference ({names[0]} − {names[1]}), mean over up to {cases} cases [paired t 95 % interval]; "
        f"▲ helps, ▼ hurts: Holm-corrected paired t-test p < {ALPHA} over the {len(entries)} cells; no verdict "
        f"under {MIN_CASES} cases.",
        "",
        "| combination | " + " | ".join(REPORT_REGIONS) + " |",
        "|---|" + "---|" * len(REPORT_REGIONS),
    ]
    for combination in dict.fromkeys(entry["combination"] for entry in entries):
        cells = []
        for region in REPORT_REGIONS:
            entry = next(e for e in entries if e["combination"] == combination and e["region"] == region)
            if math.isnan(entry["difference"]):
                cells.append("n/a")
            else:
                cells.append(
                    f"{entry['difference']:+.3f} [{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]{marks[entry['verdict']]}"
                )
        lines.append(f"| {combination} | " + " | ".join(cells) + " |")
    helps = sum(entry["verdict"] == HELPS for entry in entries)
    hurts = sum(entry["verdict"] == HURTS for entry in entries)
    too_few = sum(entry["verdict"] == TOO_FEW for entry in entries)
    lines += [
        "",
        f"{helps} of {len(entries)} combination × region cells: helps; {hurts}: hurts; {too_few}: too few cases.",
    ]
    return "\n".join(lines)


def write_efficacy_reports(
    entries: Sequence[dict[str, Any]], output_dir: str | os.PathLike, prefix: str = "kd_efficacy"
) -> dict[str, Path]:
    """Write ``<prefix>.csv``, ``<prefix>.md`` and ``<prefix>.png`` (difference heatmap, * = a verdict) atomically."""
    combinations = list(dict.fromkeys(entry["combination"] for entry in entries))
    lookup = {(e["combination"], e["region"]): e for e in entries}
    values = np.array([[lookup[(c, r)]["difference"] for r in REPORT_REGIONS] for c in combinations], dtype=float)
    texts = np.array(
        [
            [
                f"{lookup[(c, r)]['difference']:+.2f}{'*' if lookup[(c, r)]['verdict'] in (HELPS, HURTS) else ''}"
                for r in REPORT_REGIONS
            ]
            for c in combinations
        ],
        dtype=object,
    )
    finite = np.abs(values[np.isfinite(values)])
    span = max(0.05, float(finite.max())) if finite.size else 0.05
    names = _run_names(entries)
    contents = {
        f"{prefix}.csv": csv_bytes(entries),
        f"{prefix}.md": (format_efficacy_markdown(entries) + "\n").encode("utf-8"),
        f"{prefix}.png": heatmap_png(
            values, combinations, f"Dice {names[0]} − {names[1]} (* Holm p < {ALPHA})", "RdBu", -span, span, texts
        ),
    }
    return write_files(contents, output_dir)
