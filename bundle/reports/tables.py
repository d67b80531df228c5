"""Report tables and files of the combination evaluation: CSV, Markdown, heatmap, published together."""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bundle.conventions import REPORT_REGIONS, combination_name, modality_combinations
from bundle.errors import InputError
from bundle.io import publish_files, write_files
from bundle.metrics.scoring import BRATS2023_HD95_PENALTY, BRATS2025_HD95_PENALTY, SCORING_RULES

__all__ = [
    "AVERAGE",
    "REPORT_FOLDER",
    "METRICS",
    "scoring_note",
    "summarize_combinations",
    "format_summary_markdown",
    "write_combination_reports",
    "csv_bytes",
    "heatmap_png",
]

AVERAGE = "average of combinations"

REPORT_FOLDER = "report"
"""The evaluation's report files are published together as ``<output_dir>/report/`` (a link swapped atomically)."""


METRICS = {
    "dice": "Dice",
    "hd95": "HD95",
    "nsd": "NSD",
    "lesion_dice": "lesion Dice",
    "lesion_hd95": "lesion HD95",
    "lesion_nsd": "lesion NSD",
}
"""Metric keys of the reports and their column titles: global (legacy) metrics, then lesion-wise."""


def _metric_names(rows: Sequence[dict]) -> list[str]:
    return [name for name in METRICS if rows and f"{name}_{REPORT_REGIONS[0]}" in rows[0]]


def summarize_combinations(rows: Sequence[dict], modalities: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and sample std (ddof 1, as the BraTS parser) over cases per combination and region, plus the
    average over the combinations: the mean of the combination means, as the LCKD paper reports (its std
    is that of the combination means); and, when the rows name case groups (BraTS 2018's HGG and LGG), that
    average for each group, as ``"average of combinations, <group>"``.

    NaN entries (a case without any sequence of a combination; under the brats2025 rules a region empty in truth
    and prediction) are skipped, as the official package's means skip them.
    """
    summary = _summarize(rows, modalities)
    for group in sorted({row["group"] for row in rows if row.get("group")}):
        average = _summarize([row for row in rows if row.get("group") == group], modalities)[-1]
        summary.append({**average, "combination": f"{AVERAGE}, {group}"})
    return summary


def _summarize(rows: Sequence[dict], modalities: Sequence[str]) -> list[dict[str, Any]]:
    names = _metric_names(rows)
    summary = []
    for combination in modality_combinations(modalities):
        label = combination_name(combination)
        selected = [row for row in rows if row["combination"] == label]
        entry: dict[str, Any] = {"combination": label, "n_modalities": len(combination), "cases": len(selected)}
        for name in names:
            for region in REPORT_REGIONS:
                values = np.array([row[f"{name}_{region}"] for row in selected], dtype=float)
                finite = values[~np.isnan(values)]
                entry[f"{name}_{region}_mean"] = float(finite.mean()) if finite.size else math.nan
                entry[f"{name}_{region}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        summary.append(entry)
    average: dict[str, Any] = {
        "combination": AVERAGE,
        "n_modalities": "",
        "cases": summary[0]["cases"] if summary else 0,
    }
    for key in [k for k in (summary[0] if summary else {}) if k.endswith("_mean")]:
        values = np.array([entry[key] for entry in summary], dtype=float)
        finite = values[~np.isnan(values)]
        average[key] = float(finite.mean()) if finite.size else math.nan
        average[key.replace("_mean", "_std")] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    summary.append(average)
    return summary


def report_title(split: str, cases: int, scoring: str, optimistic: str | None = None) -> str:
    """The line above every table: split, cases, rule set, and whether the split's numbers are optimistic."""
    title = f"Split: {split} ({cases} cases), scored under {SCORING_RULES[scoring]}."
    if optimistic:
        title += f" Optimistic: this split {optimistic}, so these are not held-out scores."
    return title


def format_summary_markdown(
    summary: Sequence[dict[str, Any]],
    split: str = "unnamed split",
    scoring: str = "brats2025",
    optimistic: str | None = None,
) -> str:
    """Markdown table: one row per combination (and the averages), each metric's mean ± std per region.

    A first line names the split, the number of cases, the rule set and, for a split that chose the model or its
    teachers, that the numbers are optimistic; a last one how the metrics are defined.
    """
    names = [name for name in METRICS if summary and f"{name}_{REPORT_REGIONS[0]}_mean" in summary[0]]
    header = ["combination"] + [f"{METRICS[n]} {r}" for n in names for r in REPORT_REGIONS]
    cases = summary[0]["cases"] if summary else 0
    lines = [report_title(split, cases, scoring, optimistic), "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for entry in summary:
        label = entry["combination"]
        cells = [label if not label.startswith(f"{AVERAGE},") else f"{label} ({entry['cases']} cases)"]
        for name in names:
            digits = 1 if name.endswith("hd95") else 3
            for region in REPORT_REGIONS:
                mean, std = entry[f"{name}_{region}_mean"], entry[f"{name}_{region}_std"]
                spread = "" if math.isnan(std) else f" ± {std:.{digits}f}"
                cells.append("n/a" if math.isnan(mean) else f"{mean:.{digits}f}{spread}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", scoring_note(scoring)]
    return "\n".join(lines)


def scoring_note(scoring: str) -> str:
    """How the metrics of rule set ``scoring`` are defined, for the foot of a report."""
    common = (
        "Scored on the label maps inference writes, on the grid the case was read on, with TC = NCR + ET and "
        "WT = NCR + ED + ET rebuilt from them; HD95 in mm from the voxel spacing; std is the sample std (ddof 1) over "
        "cases."
    )
    if scoring == "brats2025":
        return (
            f"{common} As the official BraTS evaluation package (brats-evaluation, glioma): a region empty in truth and "
            "prediction has no score (n/a, left out of the means); empty in only one, Dice and NSD 0 and HD95 "
            f"{BRATS2025_HD95_PENALTY:g} mm; HD95 pools both directions' surface distances; lesions are connected "
            "components matched one to one (maximum bipartite matching on Dice > 1e-6), and lesion-wise scores are "
            f"the mean over matched lesions ({BRATS2025_HD95_PENALTY:g} mm when none is)."
        )
    return (
        f"{common} BraTS 2023 lesion-wise rules: a region empty in truth and prediction gives Dice 1 and HD95 0, in "
        f"only one Dice 0 and HD95 {BRATS2023_HD95_PENALTY:g} mm; true lesions dilated 3 voxels and merged, those of "
        "at most 50 mm3 left out, any overlap matches; each missed or false-positive lesion counts Dice 0 and HD95 "
        f"{BRATS2023_HD95_PENALTY:g} mm."
    )


def csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """CSV of ``rows`` (dicts with the same keys), floats to 6 significant digits."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue().encode("utf-8")


def heatmap_png(
    values: np.ndarray,
    row_labels: Sequence[str],
    title: str,
    cmap: str = "viridis",
    vmin: float = 0.0,
    vmax: float = 1.0,
    texts: np.ndarray | None = None,
) -> bytes:
    """PNG of a ``(rows, regions)`` table as a heatmap, regions in report order (ET, TC, WT).

    Args:
        values: the numbers to colour; NaN cells read "n/a".
        row_labels: one per row (e.g. the combinations).
        title: above the plot.
        cmap, vmin, vmax: matplotlib colour map and its range.
        texts: the text of each cell; default the value with 2 decimals.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.8, 0.38 * len(row_labels) + 1.4))
    image = axes.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    axes.set_xticks(range(len(REPORT_REGIONS)), REPORT_REGIONS)
    axes.set_yticks(range(len(row_labels)), list(row_labels))
    middle = (vmin + vmax) / 2
    for (row, col), value in np.ndenumerate(values):
        text = "n/a" if math.isnan(value) else f"{value:.2f}" if texts is None else str(texts[row, col])
        dark = not math.isnan(value) and (
            value < middle if cmap == "viridis" else abs(value - middle) > 0.6 * (vmax - middle)
        )
        axes.text(col, row, text, ha="center", va="center", color="white" if dark else "black", fontsize=8)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.08, pad=0.04)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def write_combination_reports(
    rows: Sequence[dict],
    summary: Sequence[dict],
    output_dir: str | os.PathLike,
    split: str = "unnamed split",
    scoring: str = "brats2025",
    optimistic: str | None = None,
) -> dict[str, Path]:
    """Publish combinations.csv, summary.csv, summary.md and combinations.png together as ``output_dir/report/``.

    The four files change together (:func:`bundle.io.publish_files`). When they cannot be written there
    (a folder that became read-only, a full disk), they are written to a new temporary folder instead and
    the error names it, so the computed metrics are never lost.

    Returns:
        ``{file name: path}``.

    Raises:
        InputError: when ``output_dir`` could not take the report (naming where it went instead).
    """
    entries = [entry for entry in summary if not entry["combination"].startswith(AVERAGE)]
    values = np.array([[entry[f"dice_{r}_mean"] for r in REPORT_REGIONS] for entry in entries], dtype=float)
    contents = {
        "combinations.csv": csv_bytes(rows),
        "summary.csv": csv_bytes(summary),
        "summary.md": (format_summary_markdown(summary, split, scoring, optimistic) + "\n").encode("utf-8"),
        "combinations.png": heatmap_png(
            values,
            [e["combination"] for e in entries],
            f"Dice per modality combination\n({split} split, {scoring}{', optimistic' if optimistic else ''})",
        ),
    }
    try:
        return publish_files(contents, output_dir, REPORT_FOLDER)
    except OSError as error:
        fallback = write_files(contents, tempfile.mkdtemp(prefix="lckd-report-"))
        raise InputError(
            f"could not write the report into {Path(output_dir) / REPORT_FOLDER} ({error.strerror or error}); the "
            f"computed report was saved in {Path(fallback['summary.md']).parent} instead. Make {output_dir} writable "
            "(or free disk space) before the next evaluation."
        ) from None
