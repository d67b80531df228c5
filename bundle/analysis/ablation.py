"""Train the same model twice on one split and seed (or N seeds), differing in one setting, and compare them.

The default change is ``ckd_weight: 0`` (distillation off): the KD-efficacy report. Any other
config key works the same way, e.g. ``shared_encoder: false`` or ``fill: "bottleneck"``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.bundle import run as run_bundle_workflow
from monai.data import DataLoader, Dataset

from bundle import BUNDLE_ROOT
from bundle.analysis.alignment import alignment_table, bottleneck_samples
from bundle.analysis.efficacy import average_seeds, compare_runs, read_case_rows, write_efficacy_reports
from bundle.conventions import DEFAULT_MODALITIES, REPORT_REGIONS
from bundle.errors import InputError, install_excepthook
from bundle.io import write_files
from bundle.networks import load_network, recorded_teachers
from bundle.reports.tables import csv_bytes

__all__ = ["EVALUATE", "parse_change", "run_bundle", "ablate", "main"]

EVALUATE = ("train.json", "evaluate.json")
"""The evaluation: ``configs/evaluate.json`` merged over ``configs/train.json``."""
logger = logging.getLogger(__name__)


def parse_change(text: str) -> tuple[str, Any]:
    """``"ckd_weight=0"`` -> ``("ckd_weight", 0)``; the value is read as JSON, else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"a change must be KEY=VALUE, e.g. ckd_weight=0 or shared_encoder=false; got {text!r}.")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _config_files(configs: Sequence[str], extra_configs: Sequence[str]) -> list[str]:
    return [str(BUNDLE_ROOT / "configs" / c) for c in configs] + [str(Path(c).resolve()) for c in extra_configs]


def run_bundle(configs: Sequence[str], extra_configs: Sequence[str] = (), **overrides: Any) -> None:
    """``python -m monai.bundle run`` of ``configs/<configs>`` (+ ``extra_configs``) with ``overrides``, in-process.

    Example:
        >>> run_bundle(["train.json", "evaluate.json"], ["configs/demo.json"], dataset_dir="data")  # doctest: +SKIP
    """
    run_bundle_workflow(
        config_file=_config_files(configs, extra_configs),
        meta_file=overrides.get("metadata_file", str(BUNDLE_ROOT / "configs" / "metadata.json")),
        logging_file=str(BUNDLE_ROOT / "configs" / "logging.conf"),
        **overrides,
    )


def _bottleneck(
    ckpt: Path, extra_configs: Sequence[str], overrides: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    parser = ConfigParser()
    parser.read_config(_config_files(EVALUATE, extra_configs))
    parser.update({**dict(overrides), "ckpt_path": str(ckpt)})  # the network is built from this model's record
    network = parser.get_parsed_content("network")
    load_network(network, ckpt)
    # features against the regions on the network's grid: image and label prepared alike, as for training
    transform = parser.get_parsed_content("train::case_preprocessing")
    cases = parser.get_parsed_content("evaluate::dataset").data
    loader = DataLoader(Dataset(cases, transform), batch_size=1, num_workers=0)
    return bottleneck_samples(network, loader, parser.get_parsed_content("device"))


def _alignment_rows(
    arms: Mapping[str, dict], modalities: Sequence[str], teachers: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Alignment of every (student, teacher) pair in each arm, side by side."""
    tables = {name: alignment_table(*arm["samples"], modalities, teachers) for name, arm in arms.items()}
    first = next(iter(tables.values()))
    rows = []
    for index, base in enumerate(first):
        row = {
            "student": base["student"],
            "teacher": base["teacher"],
            "regions": base["regions"],
            "voxels": base["voxels"],
        }
        for metric in ("cka", "cosine", *(f"probe_{r}" for r in REPORT_REGIONS)):
            for name, table in tables.items():
                row[f"{metric} {name}"] = table[index][metric]
        rows.append(row)
    return rows


def _alignment_markdown(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    lines = [
        "Bottleneck features inside the tumour: linear CKA and mean cosine between student and teacher; balanced "
        "accuracy of a linear probe on the student's features (0.5 = chance). Columns: " + " / ".join(names) + ".",
        "",
        "| student | teacher (regions) | CKA | cosine | " + " | ".join(f"probe {r}" for r in REPORT_REGIONS) + " |",
        "|---|---|---|---|" + "---|" * len(REPORT_REGIONS),
    ]
    for row in rows:
        cells = [
            " / ".join(f"{row[f'{metric} {name}']:.2f}" for name in names)
            for metric in ("cka", "cosine", *(f"probe_{r}" for r in REPORT_REGIONS))
        ]
        lines.append(f"| {row['student']} | {row['teacher']} ({row['regions']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablate(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    change: Mapping[str, Any] | None = None,
    extra_configs: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    diagnostics: bool = True,
    seeds: int = 1,
) -> dict[str, Any]:
    """Train and evaluate the model as configured (A) and with ``change`` (B); compare them per case.

    Writes into ``output_dir``: ``A/`` and ``B/`` (each run's models, evaluation and metadata.json; with
    several seeds ``A_seed<s>/`` ...), ``<prefix>.csv|md|png`` (per combination and region: Dice of A and
    B, A - B with a paired t 95 % interval, Holm-corrected p, helps/hurts; see
    :mod:`bundle.analysis.efficacy`) and, with ``diagnostics``, ``alignment.csv|md`` (student-teacher CKA,
    cosine and linear probes of both runs, teachers from run A's election). The prefix is
    ``kd_efficacy`` for the default change ``ckd_weight: 0``, else ``ablation_<key>``.

    Args:
        dataset_dir: the dataset; both runs use its one split (``datalist.json``) and the same seed(s).
        output_dir: where to write.
        change: config keys that differ in run B; default ``{"ckd_weight": 0}``.
        extra_configs: config files merged over train.json and evaluate.json (e.g. configs/demo.json).
        overrides: config keys set in both runs (e.g. ``max_epochs``).
        diagnostics: compute the alignment diagnostics (on the first seed's runs).
        seeds: train each run this many times, with seeds ``seed``, ``seed + 1``, ...; each case's Dice is
            averaged over the seeds before the comparison, so the effect is not one training's luck.

    Returns:
        ``{"entries": [...], "rows": {name: per case x combination rows}, "alignment": [...],
        "teachers": {...}, "paths": {...}, "names": (A, B)}``.
    """
    change = dict(change or {"ckd_weight": 0})
    if not change:
        raise InputError("change is empty: give at least one KEY=VALUE that differs between the two runs.")
    kd = change == {"ckd_weight": 0}
    names = ("with CKD", "without CKD") if kd else ("as configured", ", ".join(f"{k}={v}" for k, v in change.items()))
    prefix = "kd_efficacy" if kd else "ablation_" + "_".join(change)
    modalities = list((overrides or {}).get("modalities", DEFAULT_MODALITIES))
    output = Path(output_dir).resolve()
    arms: dict[str, dict] = {}
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"seeds must be an int >= 1, got {seeds!r}.")
    base_seed = int(dict(overrides or {}).get("seed", 0))
    for name, label, arm_change in ((names[0], "A", {}), (names[1], "B", change)):
        runs = []
        for repeat in range(seeds):
            work = output / (label if seeds == 1 else f"{label}_seed{base_seed + repeat}")
            work.mkdir(parents=True, exist_ok=True)
            shutil.copy(BUNDLE_ROOT / "configs" / "metadata.json", work / "metadata.json")
            settings = {
                "dataset_dir": str(Path(dataset_dir).resolve()),
                "ckpt_dir": str(work / "models"),
                "output_dir": str(work / "eval"),
                "metadata_file": str(work / "metadata.json"),
                "resume": False,
                **dict(overrides or {}),
                "seed": base_seed + repeat,
                **arm_change,
            }
            logger.info(f"ablation run {work.name} ({name}): training")
            run_bundle(["train.json"], extra_configs, **settings)
            evaluate = {k: v for k, v in settings.items() if k not in ("ckpt_dir", "resume")}
            logger.info(f"ablation run {work.name} ({name}): evaluating all combinations")
            run_bundle(EVALUATE, extra_configs, ckpt_path=str(work / "models" / "model.pt"), **evaluate)
            runs.append(
                {
                    "work": work,
                    "settings": evaluate,
                    "rows": read_case_rows(work / "eval" / "report" / "combinations.csv"),
                }
            )
        arms[name] = {**runs[0], "rows": average_seeds([run["rows"] for run in runs])}
    entries = compare_runs(arms[names[0]]["rows"], arms[names[1]]["rows"], names)
    paths = write_efficacy_reports(entries, output, prefix)
    teachers = recorded_teachers(arms[names[0]]["work"] / "models" / "model.pt", modalities)
    alignment: list[dict[str, Any]] = []
    if diagnostics and teachers:
        for arm in arms.values():
            arm["samples"] = _bottleneck(arm["work"] / "models" / "model.pt", extra_configs, arm["settings"])
        alignment = _alignment_rows(arms, modalities, teachers)
        paths.update(
            write_files(
                {
                    "alignment.csv": csv_bytes(alignment),
                    "alignment.md": (_alignment_markdown(alignment, names) + "\n").encode("utf-8"),
                },
                output,
            )
        )
    rows = {name: arm["rows"] for name, arm in arms.items()}
    return {
        "entries": entries,
        "rows": rows,
        "alignment": alignment,
        "teachers": teachers,
        "paths": paths,
        "names": names,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``lckd-ablate --dataset_dir DIR [--change ckd_weight=0] [--config configs/demo.json]``."""
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--output_dir", default="ablation")
    parser.add_argument("--change", nargs="+", default=["ckd_weight=0"], help="KEY=VALUE settings of run B")
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE settings of both runs (e.g. max_epochs=100)")
    parser.add_argument("--config", nargs="*", default=[], help="config files merged over train.json and evaluate.json")
    parser.add_argument(
        "--seeds", type=int, default=1, help="train each run with this many seeds; Dice averaged per case"
    )
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the feature alignment diagnostics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = ablate(
        args.dataset_dir,
        args.output_dir,
        dict(parse_change(c) for c in args.change),
        args.config,
        dict(parse_change(c) for c in args.set),
        not args.no_diagnostics,
        args.seeds,
    )
    for path in result["paths"].values():
        if path.suffix == ".md":
            print(path.read_text(encoding="utf-8"))
    print("reports: " + ", ".join(str(p) for p in result["paths"].values()))


if __name__ == "__main__":
    main()
