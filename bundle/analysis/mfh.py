"""The modality focusing hypothesis on synthetic data: KD gain against the shared fraction of the signal.

For each value of the generator's ``shared`` knob (0: each region shows only in its teacher modality;
1: every modality shows it equally) a dataset is made and the KD ablation is run on it. The KD gain of
a region is the Dice difference (with CKD − without) of the *student* single-modality inputs (every
modality but the region's teacher), averaged per case over the students, with a paired t
interval over cases. The hypothesis predicts a gain that grows with the shared fraction and vanishes
or turns negative when the decisive signal is teacher-specific.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bundle import BUNDLE_ROOT
from bundle.analysis.ablation import ablate
from bundle.analysis.efficacy import paired_interval
from bundle.conventions import DEFAULT_MODALITIES, REPORT_REGIONS
from bundle.data.synthetic import DEFAULT_TEACHERS, make_dataset
from bundle.errors import install_excepthook
from bundle.io import write_files
from bundle.reports.tables import csv_bytes

__all__ = ["SWEEP_CONFIG", "SWEEP_SETTINGS", "student_gain", "run_sweep", "main"]

logger = logging.getLogger(__name__)

SWEEP_CONFIG = BUNDLE_ROOT / "configs" / "demo.json"
"""The small CPU profile each arm of the sweep trains with (32^3 patches, 4 levels)."""

SWEEP_SETTINGS: dict[str, Any] = {
    "num_samples": 1,
    "lr_schedule_epochs": 100000,  # a constant rate: cosine decay over a short run stalls learning
    "hd95": False,
    "log_every": 100,
}
"""What the sweep changes in that profile."""


def student_gain(
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    teachers: Mapping[str, str],
    modalities: Sequence[str] = DEFAULT_MODALITIES,
) -> dict[str, tuple[float, float, float]]:
    """Per region, the mean over cases of (A − B) Dice averaged over the region's student modalities.

    Args:
        rows_a, rows_b: per case x combination rows of the two evaluations (A with CKD, B without).
        teachers: region -> teacher modality (of the data, or as elected).
        modalities: all modalities; the students of a region are all but its teacher.

    Returns:
        region -> ``(mean gain, low, high)`` with a paired t 95 % interval over cases.
    """
    index_b = {(row["case"], row["combination"]): row for row in rows_b}
    result = {}
    for region in REPORT_REGIONS:
        students = [m for m in modalities if m != teachers[region]]
        per_case: dict[str, list[float]] = {}
        for row in rows_a:
            other = index_b.get((row["case"], row["combination"]))
            if other is None or row["combination"] not in students:
                continue
            difference = row[f"dice_{region}"] - other[f"dice_{region}"]
            if math.isfinite(difference):
                per_case.setdefault(row["case"], []).append(difference)
        result[region] = paired_interval([float(np.mean(v)) for v in per_case.values()])[:3]
    return result


def _plot(rows: Sequence[Mapping[str, Any]]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.2, 3.6))
    fractions = [row["shared"] for row in rows]
    for offset, region in zip((-0.01, 0.0, 0.01), REPORT_REGIONS):
        gain = np.array([row[f"gain_{region}"] for row in rows])
        low = gain - np.array([row[f"gain_{region}_low"] for row in rows])
        high = np.array([row[f"gain_{region}_high"] for row in rows]) - gain
        axes.errorbar(np.array(fractions) + offset, gain, yerr=[low, high], marker="o", capsize=3, label=region)
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xlabel("shared fraction of the decisive signal")
    axes.set_ylabel("KD gain, student Dice (with − without)")
    axes.set_title("Modality focusing hypothesis, synthetic data")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def _markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "KD gain of the student single-modality inputs (Dice with CKD − without), mean over test cases "
        "[paired t 95 % interval over cases]; CKA = mean student-teacher linear CKA of bottleneck features in the "
        "tumour (with / without CKD).",
        "",
        "| shared | "
        + " | ".join(f"gain {r}" for r in REPORT_REGIONS)
        + " | gain, all 15 | CKA with / without | teachers elected |",
        "|---|" + "---|" * (len(REPORT_REGIONS) + 3),
    ]
    for row in rows:
        gains = [
            f"{row[f'gain_{r}']:+.3f} [{row[f'gain_{r}_low']:+.3f}, {row[f'gain_{r}_high']:+.3f}]"
            for r in REPORT_REGIONS
        ]
        lines.append(
            f"| {row['shared']:.2f} | " + " | ".join(gains) + f" | {row['gain_all']:+.3f} | "
            f"{row['cka_with']:.2f} / {row['cka_without']:.2f} | {row['teachers']} |"
        )
    return "\n".join(lines)


def run_sweep(
    output_dir: str | Path,
    fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    cases: int = 30,
    size: int = 32,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run the KD ablation on one synthetic dataset per shared fraction; write ``mfh.csv|md`` and ``mfh_gain.png``.

    Returns:
        One row per fraction: gains per region with intervals, the gain averaged over all 15
        combinations, the mean student-teacher CKA with and without CKD, the elected teachers.
    """
    output = Path(output_dir)
    rows = []
    for fraction in fractions:
        start = time.monotonic()
        work = output / f"shared_{fraction:.2f}"
        make_dataset(work / "data", cases=cases, size=size, seed=seed, shared=fraction)
        result = ablate(
            work / "data", work, extra_configs=[str(SWEEP_CONFIG)], overrides={**SWEEP_SETTINGS, **dict(settings or {})}
        )
        names = result["names"]
        gains = student_gain(result["rows"][names[0]], result["rows"][names[1]], DEFAULT_TEACHERS)
        row: dict[str, Any] = {"shared": float(fraction)}
        for region, (mean, low, high) in gains.items():
            row.update({f"gain_{region}": mean, f"gain_{region}_low": low, f"gain_{region}_high": high})
        row["gain_all"] = float(np.nanmean([entry["difference"] for entry in result["entries"]]))
        alignment = result["alignment"]
        row["cka_with"] = float(np.mean([a[f"cka {names[0]}"] for a in alignment])) if alignment else math.nan
        row["cka_without"] = float(np.mean([a[f"cka {names[1]}"] for a in alignment])) if alignment else math.nan
        row["teachers"] = ",".join(f"{r}={m}" for r, m in (result["teachers"] or {}).items())
        row["seconds"] = time.monotonic() - start
        rows.append(row)
        logger.info(f"shared {fraction:.2f}: {row}")
        write_files(
            {
                "mfh.csv": csv_bytes(rows),
                "mfh.md": (_markdown(rows) + "\n").encode("utf-8"),
                "mfh_gain.png": _plot(rows),
            },
            output,
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``lckd-mfh --out mfh [--fractions 0 0.5 1] [--max-epochs 30]``."""
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="mfh", help="folder for the datasets, runs and the report")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=36)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    third = max(1, args.max_epochs // 3)
    settings = {
        "max_epochs": args.max_epochs,
        "val_interval": args.max_epochs,
        "elect_epoch": third,
        "reelect_every": third,
        "warmup_epochs": third,
    }
    rows = run_sweep(args.out, args.fractions, args.cases, args.size, args.seed, settings)
    print(_markdown(rows))
    print(f"plot: {Path(args.out) / 'mfh_gain.png'}")


if __name__ == "__main__":
    main()
