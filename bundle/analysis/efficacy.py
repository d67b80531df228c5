"""Compare two trainings case by case over the 15 modality combinations: does a change (CKD) help?

Both runs are evaluated on the same cases; per combination and region the Dice difference is averaged
over cases with a paired bootstrap 95 % interval. An interval above 0 reads "helps", below 0 "hurts".
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bundle.errors import InputError
from bundle.handlers.evaluation import csv_bytes, heatmap_png, write_files
from bundle.modalities import REPORT_REGIONS

__all__ = ["paired_bootstrap", "read_case_rows", "compare_runs", "format_efficacy_markdown", "write_efficacy_reports"]

HELPS, HURTS, UNCLEAR = "helps", "hurts", "no clear effect"


def paired_bootstrap(
    differences: Sequence[float], resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of paired per-case differences and its percentile bootstrap interval.

    Args:
        differences: one value per case (run A minus run B); NaNs are dropped.
        resamples: bootstrap resamples of the cases.
        seed: of the resampling.
        level: coverage of the interval.

    Returns:
        ``(mean, low, high)``; all NaN when no finite difference is left.

    Example:
        >>> mean, low, high = paired_bootstrap([0.1, 0.12, 0.08, 0.11])
        >>> low > 0
        True
    """
    values = np.asarray(differences, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)


def read_case_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of an evaluation's ``combinations.csv`` with numbers as floats."""
    if not Path(path).is_file():
        raise InputError(f"{path} does not exist; run configs/evaluate.json for that model first.")
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for key, value in row.items():
            if key.startswith(("dice_", "hd95_")):
                row[key] = float(value) if value not in ("", "nan") else math.nan
    return rows


def compare_runs(
    rows_a: Sequence[dict[str, Any]],
    rows_b: Sequence[dict[str, Any]],
    names: tuple[str, str] = ("with CKD", "without CKD"),
    resamples: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per combination and region: mean Dice of run A and B over the shared cases, A - B and its 95 % interval.

    Args:
        rows_a, rows_b: per case x combination rows of two evaluations (``combinations.csv``).
        names: what runs A and B are, used as column names.
        resamples, seed: of the paired bootstrap.

    Returns:
        One entry per combination (in the order of ``rows_a``) and region with ``verdict`` "helps",
        "hurts" or "no clear effect" (interval containing 0, or no case).

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
            mean, low, high = paired_bootstrap(a[both] - b[both], resamples, seed)
            verdict = HELPS if low > 0 else HURTS if high < 0 else UNCLEAR
            entries.append(
                {
                    "combination": combination,
                    "region": region,
                    "cases": int(both.sum()),
                    f"dice {names[0]}": float(a[both].mean()) if both.any() else math.nan,
                    f"dice {names[1]}": float(b[both].mean()) if both.any() else math.nan,
                    "difference": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "verdict": verdict,
                }
            )
    return entries


def _run_names(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The names of runs A and B, read back from the ``dice <name>`` columns of :func:`compare_runs`."""
    return [key[len("dice ") :] for key in entries[0] if key.startswith("dice ")] if entries else ["A", "B"]


def format_efficacy_markdown(entries: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one row per combination, per region ``A - B [low, high]`` and a verdict mark."""
    marks = {HELPS: " ▲", HURTS: " ▼", UNCLEAR: ""}
    names = _run_names(entries)
    lines = [
        f"Dice difference ({names[0]} − {names[1]}), mean over cases [paired bootstrap 95 % interval]; "
        "▲ helps, ▼ hurts (interval excludes 0).",
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
    lines += ["", f"{helps} of {len(entries)} combination × region cells: helps; {hurts}: hurts."]
    return "\n".join(lines)


def write_efficacy_reports(
    entries: Sequence[dict[str, Any]], output_dir: str | os.PathLike, prefix: str = "kd_efficacy"
) -> dict[str, Path]:
    """Write ``<prefix>.csv``, ``<prefix>.md`` and ``<prefix>.png`` (difference heatmap, * = significant) atomically."""
    combinations = list(dict.fromkeys(entry["combination"] for entry in entries))
    lookup = {(e["combination"], e["region"]): e for e in entries}
    values = np.array([[lookup[(c, r)]["difference"] for r in REPORT_REGIONS] for c in combinations], dtype=float)
    texts = np.array(
        [
            [
                f"{lookup[(c, r)]['difference']:+.2f}{'*' if lookup[(c, r)]['verdict'] != UNCLEAR else ''}"
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
            values, combinations, f"Dice {names[0]} − {names[1]} (* 95 % CI excludes 0)", "RdBu", -span, span, texts
        ),
    }
    return write_files(contents, output_dir)
