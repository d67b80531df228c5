"""Does federated LCKD pay off when sites acquire different sequences? Three simulated hospitals, compared on one
held-out test set over the 15 combinations: each site trained alone, all data pooled centrally, and federated
(``jobs/lckd_fedavg`` under ``nvflare simulator``).

The sites are anatomical phantoms (:mod:`bundle.data.phantoms`): site-1 never acquires T1ce, site-2 never T1,
site-3 acquires everything. Every arm trains with the same profile (configs/demo.json and ``overrides``): the
same epochs (the federated run: one local epoch per round), election schedule and network.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bundle import BUNDLE_ROOT
from bundle.analysis.ablation import EVALUATE, run_bundle
from bundle.analysis.efficacy import read_case_rows
from bundle.conventions import DEFAULT_MODALITIES, REPORT_REGIONS
from bundle.data.phantoms import make_phantom_dataset
from bundle.errors import InputError, install_excepthook
from bundle.federated.job import configure_job
from bundle.io import atomic_write_json, read_json
from bundle.metadata import metadata_without_election
from bundle.networks import recorded_teachers

__all__ = ["SITES", "ARMS", "make_sites", "compare_training", "format_comparison", "main"]

SITES = {"site-1": ("t1ce",), "site-2": ("t1",), "site-3": ()}
"""Simulated sites and the sequences each never acquires."""
ARMS = (*SITES, "pooled", "federated")
"""The trainings compared: each site alone, all sites' cases pooled centrally, federated."""
PROFILE = "configs/demo.json"
logger = logging.getLogger(__name__)


def make_sites(root: str | os.PathLike, cases: int, test_cases: int, spacing: float, seed: int = 0) -> dict[str, Path]:
    """Phantom datasets ``root/<site>`` (each missing its :data:`SITES` sequences), ``root/test`` (complete, with
    ``split.json`` naming its cases) and ``root/pooled`` (links to every site's cases).

    Returns:
        ``{site: folder, ..., "test": folder, "pooled": folder}``.
    """
    root = Path(root)
    folders: dict[str, Path] = {}
    pooled = root / "pooled"
    pooled.mkdir(parents=True, exist_ok=True)
    for index, (site, absent) in enumerate(SITES.items()):
        folders[site] = root / site
        prefix = site.replace("-", "").upper()
        for name in make_phantom_dataset(folders[site], cases, seed + index, spacing, name_prefix=prefix):
            for modality in absent:
                (folders[site] / name / f"{name}_{modality}.nii.gz").unlink()
            (pooled / name).symlink_to(folders[site] / name, target_is_directory=True)
    folders["test"] = root / "test"
    names = make_phantom_dataset(folders["test"], test_cases, seed + len(SITES), spacing, name_prefix="TEST")
    atomic_write_json(folders["test"] / "split.json", {"test": names})
    folders["pooled"] = pooled
    return folders


def _evaluate(work: Path, test_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    run_bundle(
        EVALUATE,
        [PROFILE],
        **{
            **settings,
            "dataset_dir": str(test_dir),
            "split_file": str(test_dir / "split.json"),
            "split_lists": {"test": "test"},
            "ckpt_path": str(work / "models" / "model.pt"),
            "output_dir": str(work / "eval"),
            "metadata_file": str(work / "metadata.json"),
        },
    )
    rows = read_case_rows(work / "eval" / "report" / "combinations.csv")

    def mean(key: str, keep=lambda row: True) -> float:
        values = [row[key] for row in rows if keep(row) and not math.isnan(row[key])]
        return round(sum(values) / len(values), 4) if values else math.nan

    metadata = read_json(work / "metadata.json").get("lckd", {})
    return {
        "teachers": recorded_teachers(work / "models" / "model.pt", DEFAULT_MODALITIES),
        "election": metadata,
        "dice": {region: mean(f"dice_{region}") for region in REPORT_REGIONS},
        "lesion_dice": {region: mean(f"lesion_dice_{region}") for region in REPORT_REGIONS},
        "dice_with_t1ce": {
            region: mean(f"dice_{region}", lambda row: "t1ce" in row["combination"].split("+"))
            for region in REPORT_REGIONS
        },
        "dice_without_t1ce": {
            region: mean(f"dice_{region}", lambda row: "t1ce" not in row["combination"].split("+"))
            for region in REPORT_REGIONS
        },
        "cases": len({row["case"] for row in rows}),
        "combinations": len({row["combination"] for row in rows}),
    }


def _fresh_work(output: Path, name: str) -> Path:
    work = output / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    metadata_without_election(work / "metadata.json")
    return work


def _train_central(work: Path, dataset_dir: Path, overrides: Mapping[str, Any]) -> None:
    run_bundle(
        ["train.json"],
        [PROFILE],
        dataset_dir=str(dataset_dir),
        ckpt_dir=str(work / "models"),
        output_dir=str(work / "eval"),
        metadata_file=str(work / "metadata.json"),
        **overrides,
    )


def _train_federated(work: Path, sites_root: Path, overrides: Mapping[str, Any], threads: int) -> None:
    profile = read_json(BUNDLE_ROOT / PROFILE)
    settings = {**profile, **overrides}
    # 3 validation cases per site: the simulation sends every election sum (a real site keeps min_site_cases 5)
    atomic_write_json(work / "overrides.json", {"min_site_cases": 1, **overrides})
    job = configure_job(
        work / "job",
        num_clients=len(SITES),
        num_rounds=int(settings["max_epochs"]),
        elect_round=int(settings["elect_epoch"]),
        reelect_every=int(settings["reelect_every"]),
        configs=["configs/train.json", "configs/federated.json", PROFILE, str(work / "overrides.json")],
        dataset_root=str(sites_root),
        threads=threads,
        ckpt_dir=str(work / "models"),
        metadata_file=str(work / "metadata.json"),
    )
    nvflare = Path(sys.executable).with_name("nvflare")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(work / "simulator.log", "w") as log:
        run = subprocess.run(
            [
                str(nvflare),
                "simulator",
                str(job),
                "-w",
                str(work / "workspace"),
                "-n",
                str(len(SITES)),
                "-t",
                str(len(SITES)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if run.returncode != 0 or not (work / "models" / "model.pt").is_file():
        raise InputError(f"the federated run failed (exit {run.returncode}); see {work / 'simulator.log'}.")


def compare_training(
    output_dir: str | os.PathLike,
    cases: int = 16,
    test_cases: int = 10,
    spacing: float = 3.0,
    overrides: Mapping[str, Any] | None = None,
    threads: int = 1,
    arms: Sequence[str] = ARMS,
) -> dict[str, Any]:
    """Make the sites, train the ``arms``, evaluate each on the common test set; write ``comparison.json``.

    Args:
        output_dir: where data, runs and the result go.
        cases: phantoms per site; ``test_cases``: in the common test set; ``spacing``: their voxel size (mm).
        overrides: config keys of every arm (over configs/demo.json); ``max_epochs`` is also the federated
            run's number of rounds (one local epoch each).
        threads: torch threads per site of the federated run.
        arms: which of :data:`ARMS` to train (the data is made the same way whatever the choice).

    Returns:
        ``{arm: {"teachers", "election", "dice", "lesion_dice", "dice_with_t1ce", "dice_without_t1ce", "cases",
        "combinations", "seconds"}}``; arms ``local site-1`` ... ``pooled``, ``federated``.

    Raises:
        InputError: for an arm not in :data:`ARMS`, before anything is made.
    """
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown or not arms:
        named = f" ({unknown} unknown)" if unknown else ""
        raise InputError(f"arms must be a non-empty choice of {list(ARMS)}, got {list(arms)}{named}.")
    output = Path(output_dir).resolve()
    folders = make_sites(output / "data", cases, test_cases, spacing)
    overrides = {
        "pixdim": [spacing] * 3,  # trained and evaluated on the phantoms' own grid, as make demo does
        "test_fraction": 0.0,
        "allow_absent_modalities": True,
        "mlflow": False,
        **dict(overrides or {}),
    }
    results: dict[str, Any] = {}
    for key in (key for key in ARMS if key in arms):
        arm = f"local {key}" if key in SITES else key
        work = _fresh_work(output, arm.replace(" ", "_"))
        start = time.monotonic()
        logger.info(f"{arm}: training")
        if key == "federated":
            _train_federated(work, output / "data", overrides, threads)
        else:
            _train_central(work, folders[key], overrides)
        seconds = round(time.monotonic() - start)
        logger.info(f"{arm}: trained in {seconds} s; evaluating the 15 combinations on the common test set")
        results[arm] = {**_evaluate(work, folders["test"], overrides), "seconds": seconds}
    atomic_write_json(output / "comparison.json", results)
    return results


def format_comparison(arms: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`compare_training`'s result."""
    lines = [
        "| trained | teachers ET / TC / WT | Dice ET | Dice TC | Dice WT | lesion Dice ET / TC / WT "
        "| ET Dice with / without T1ce | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, result in arms.items():
        teachers = " / ".join((result["teachers"] or {}).get(region, "-") for region in REPORT_REGIONS)
        dice = "".join(f"| {result['dice'][region]:.3f} " for region in REPORT_REGIONS)
        lesion = " / ".join(f"{result['lesion_dice'][region]:.3f}" for region in REPORT_REGIONS)
        et = f"{result['dice_with_t1ce']['ET']:.3f} / {result['dice_without_t1ce']['ET']:.3f}"
        lines.append(f"| {arm} | {teachers} {dice}| {lesion} | {et} | {result['seconds']} s |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``lckd-federated-simulation --output_dir eval/federated``."""
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="eval/federated")
    parser.add_argument("--cases", type=int, default=16, help="phantoms per site")
    parser.add_argument("--test_cases", type=int, default=10)
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per federated site")
    parser.add_argument(
        "--epochs", type=int, help="epochs of every arm, rounds of the federated one (default: the profile's)"
    )
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="the trainings to compare")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = {"max_epochs": args.epochs} if args.epochs is not None else {}
    results = compare_training(
        args.output_dir, args.cases, args.test_cases, args.spacing, overrides, threads=args.threads, arms=args.arms
    )
    print(format_comparison(results))


if __name__ == "__main__":
    main()
