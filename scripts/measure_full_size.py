"""Measure what a BraTS-scale training and evaluation costs with the default train.json, on this machine.

    python scripts/measure_full_size.py            # 20 phantoms at 240x240x155 in data/phantoms_full (kept), ~40 min here
    python scripts/measure_full_size.py --json     # one JSON object (docs/benchmark_full_size.json)

It writes ``--cases`` anatomical phantoms at 1 mm (240 x 240 x 155) to ``--data`` (kept for later runs),
preprocesses them as train.json does (brain crop, crop indices) into the RAM cache and into the disk
cache (bytes per case, seconds per case), draws training samples from the cache (samples per second in
one worker), then times one training step, one sliding-window inference of a whole case (LCKDNet and
DynUNet at their defaults), one teacher election (the four single-sequence predictions) and the
15-combination evaluation of a case, once each (they take minutes on a CPU), and extrapolates memory
to 1,251 cases (BraTS 2021).

The network settings are ``scripts/benchmark.py``'s (``--patch``, ``--filters``, ``--device`` ...); the phases run
in fresh processes, as there.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from benchmark import (
    argument_parser,
    in_fresh_process,
    measure_phase,
    peak_bytes,
    time_and_memory_ratios,
    with_baseline_filters,
)
from monai.transforms import Compose, RandomizableTrait, Transform, convert_to_contiguous

from bundle import BUNDLE_ROOT
from bundle.errors import install_excepthook

BRATS_2021_CASES = 1251


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cached_bytes(item: object) -> int:
    if isinstance(item, torch.Tensor):
        return item.untyped_storage().nbytes()
    if isinstance(item, dict):
        return sum(_cached_bytes(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(_cached_bytes(v) for v in item)
    return 0


def measure_cache(data_dir: str, mode: str, args: argparse.Namespace) -> dict[str, float]:
    """train.json's training dataset over the phantoms with ``cache=mode``: seconds and bytes per case, samples/s."""
    from monai.bundle import ConfigParser

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="lckd_benchmark_")
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / "configs" / "train.json"))
    parser.update(
        {
            "bundle_root": str(BUNDLE_ROOT),
            "dataset_dir": data_dir,
            "output_dir": work,
            "cache": mode,
            "cache_dir": f"{work}/cache",
            "num_workers": 0,
        }
    )
    datalist = parser.get_parsed_content("datalist")
    before_rss, before_peak = _rss_bytes(), peak_bytes(torch.device("cpu"))
    start = time.perf_counter()
    dataset = parser.get_parsed_content("train::dataset")
    cases = len(dataset)
    if mode == "disk":
        for index in range(cases):  # the first epoch preprocesses and writes each case
            dataset[index]
    preprocess_s = (time.perf_counter() - start) / cases
    if mode == "memory":  # what CacheDataset keeps: the pipeline up to its first random transform, contiguous
        pipeline: Compose = dataset.transform
        first_random = pipeline.get_index_of_first(
            lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)
        )
        cached = sum(
            _cached_bytes(convert_to_contiguous(pipeline(dict(item), end=first_random))) for item in dataset.data
        )
        cached /= cases
    else:
        cached = sum(f.stat().st_size for f in Path(work, "cache").glob("*.pt")) / cases
    grid_voxels = 240 * 240 * 155
    start = time.perf_counter()
    draws = min(cases, 8)
    for index in range(draws):
        samples = len(dataset[index])
    sample_s = (time.perf_counter() - start) / (draws * samples)
    return {
        "cases": cases,
        "validation_cases": len(datalist["validation"]),
        "preprocess_s_per_case": preprocess_s,
        "cached_mb_per_case": cached / 2**20,
        "cached_bytes_per_grid_voxel": cached / grid_voxels,
        "rss_growth_mb": (_rss_bytes() - before_rss) / 2**20,
        "peak_rss_growth_mb": (peak_bytes(torch.device("cpu")) - before_peak) / 2**20,
        "samples_per_s": 1.0 / sample_s,
    }


def write_phantoms(folder: Path, cases: int) -> float:
    """Anatomical phantoms at 1 mm in ``folder`` (kept: reused when present); seconds per case written."""
    from bundle.data.phantoms import make_phantom_dataset

    record = folder / "phantoms.json"
    if record.is_file() and json.loads(record.read_text()) == {
        "cases": cases,
        "seed": 0,
        "spacing": 1.0,
        "layout": "brats2021",
    }:
        return float("nan")
    start = time.perf_counter()
    make_phantom_dataset(folder, cases=cases, seed=0, spacing=1.0)
    return (time.perf_counter() - start) / cases


def run_full_size(args: argparse.Namespace) -> dict:
    """The BraTS-scale measurements of ``--full-size`` (see the module docstring)."""
    data = Path(args.data)
    report: dict = {"device": args.device, "settings": {k: v for k, v in vars(args).items()}}
    report["phantom_s_per_case"] = write_phantoms(data, args.cases)
    for mode in ("memory", "disk"):
        report[f"cache_{mode}"] = in_fresh_process(measure_cache, str(data), mode, args)
    results: dict[str, dict[str, float]] = {"dynunet": {}, "lckdnet": {}}
    for name in results:
        for phase in ("train", "inference", "election", "combinations"):
            results[name].update(in_fresh_process(measure_phase, name, phase, args))
    report.update(results)
    dyn, lckd = results["dynunet"], results["lckdnet"]
    memory = report["cache_memory"]
    report["ratios"] = {
        **time_and_memory_ratios(lckd, dyn),
        "election_over_inference": lckd["election_s"] / lckd["inference_s"],
    }
    all_cases_gb = memory["cached_mb_per_case"] * BRATS_2021_CASES / 1024
    report["extrapolation_1251"] = {
        "ram_cache_gb": all_cases_gb,
        "disk_cache_gb": report["cache_disk"]["cached_mb_per_case"] * BRATS_2021_CASES / 1024,
        "train_step_peak_gb": lckd["train_peak_mb"] / 1024,
        "samples_per_s_needed": args.batch / lckd["train_s"],
    }
    return report


def print_full_size(report: dict) -> None:
    settings = report["settings"]
    print(
        f"device {report['device']}, {settings['threads']} threads, {settings['cases']} phantoms 240x240x155 at 1 mm, "
        f"patch {settings['patch']}^3, overlap {settings['overlap']}, sw_batch_size {settings['sw_batch_size']}, "
        f"train step of {settings['batch']} patches"
    )
    for mode in ("memory", "disk"):
        c = report[f"cache_{mode}"]
        print(
            f"cache {mode:6}: {c['preprocess_s_per_case']:.1f} s/case preprocessing, {c['cached_mb_per_case']:.0f} MB/case "
            f"({c['cached_bytes_per_grid_voxel']:.1f} B per grid voxel), peak RSS growth {c['peak_rss_growth_mb']:.0f} MB "
            f"for {c['cases']} cases, {c['samples_per_s']:.2f} training samples/s per worker"
        )
    dyn, lckd = report["dynunet"], report["lckdnet"]
    for key, label in (
        ("train_s", "train step s"),
        ("train_peak_mb", "train peak MB"),
        ("inference_s", "inference s/case"),
        ("inference_peak_mb", "inference peak MB"),
        ("election_s", "election s/case"),
        ("combinations_s", "15 combinations s/case"),
    ):
        cells = [f"{m[key]:.1f}" if key in m else "-" for m in (dyn, lckd)]
        print(f"  {label:24}{cells[0]:>10}{cells[1]:>10}")
    for key, value in {**report["ratios"], **report["extrapolation_1251"]}.items():
        print(f"  {key:30}{value:8.2f}")


def main() -> None:
    install_excepthook()
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20, help="phantoms to write and cache")
    parser.add_argument("--data", default="data/phantoms_full", help="where the phantoms are kept")
    args = with_baseline_filters(parser.parse_args())
    args.repeats, args.inference_repeats = min(args.repeats, 2), 1
    args.full_size = True  # measure_phase: one timed run of each whole-case phase, no FLOP count
    report = run_full_size(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_full_size(report)


if __name__ == "__main__":
    main()
