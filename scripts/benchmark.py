"""Measure LCKDNet against MONAI's DynUNet on this machine and print ratios (LCKDNet / DynUNet).

    python scripts/benchmark.py --quick          # small sizes, about a minute on a 2-core CPU
    python scripts/benchmark.py --patch 64 --volume 96 96 96   # medium, about 15 minutes there
    python scripts/benchmark.py                  # patch 128^3, BraTS-sized volume 240x240x155
    python scripts/benchmark.py --json           # one JSON object with the ratios
    python scripts/benchmark.py --full-size      # 20 anatomical phantoms at 240x240x155: data, memory, per-case times

Both models see the same patch and volume. Train step = forward + backward + AdamW step (CKD on
for LCKDNet); inference = sliding-window inference of one 4-sequence volume; "combinations" = all 15
modality combinations of that volume (LCKDNet encodes each window once) against one all-sequence
inference. FLOPs from ``torch.utils.flop_counter.FlopCounterMode``; times are medians of
``--repeats`` runs after a warm-up; peak memory is the growth of the process's peak RSS (CPU) or
``torch.cuda.max_memory_allocated`` (GPU), each phase measured in a fresh process. LCKDNet is
measured with its shared encoder and with one encoder per sequence; a micro-benchmark compares a
loop of per-sequence convolutions with one grouped convolution.

``--full-size`` measures what a BraTS-scale training and evaluation costs with the default train.json:
it writes ``--cases`` anatomical phantoms at 1 mm (240 x 240 x 155) to ``--data`` (kept for later runs),
preprocesses them as train.json does (brain crop, crop indices) into the RAM cache and into the disk
cache (bytes per case, seconds per case), draws training samples from the cache (samples per second in
one worker), then times one training step, one sliding-window inference of a whole case (LCKDNet and
DynUNet at their defaults), one teacher election (the four single-sequence predictions) and the
15-combination evaluation of a case, once each (they take minutes on a CPU), and extrapolates memory
to 1,251 cases (BraTS 2021).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet
from torch.utils.flop_counter import FlopCounterMode

from bundle import BUNDLE_ROOT
from bundle.conventions import combination_masks
from bundle.data import DEFAULT_TEACHERS
from bundle.errors import install_excepthook
from bundle.losses import LCKDLoss
from bundle.networks import LCKDNet, inference_network

MODELS = ("dynunet", "lckdnet", "lckdnet_per_modality")


BRATS_2021_CASES = 1251


def median_seconds(step: Callable[[], object], repeats: int, device: torch.device, warm_up: bool = True) -> float:
    if warm_up:
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(step: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def build(name: str, args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    levels = len(args.filters)
    kernels, strides = [3] * levels, [1] + [2] * (levels - 1)
    if name == "dynunet":
        return DynUNet(3, 4, 3, kernels, strides, strides[1:], filters=args.baseline_filters, res_block=True).to(device)
    shared = name == "lckdnet"
    return LCKDNet(filters=args.filters, kernel_size=kernels, strides=strides, shared_encoder=shared).to(device)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure_phase(name: str, phase: str, args: argparse.Namespace) -> dict[str, float]:
    """Time, FLOPs and peak memory of one model in one phase ("train", "inference", "combinations")."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build(name, args, device)
    patch = [args.patch] * 3
    lckd = name != "dynunet"
    if phase == "train":
        x = torch.randn(args.batch, 4, *patch, device=device)
        y = (torch.rand(args.batch, 3, *patch, device=device) > 0.5).float()
        mask = torch.ones(args.batch, 4, dtype=torch.bool, device=device)
        loss = LCKDLoss(teachers=DEFAULT_TEACHERS if lckd else None)
        optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
        call = (lambda inp: net(inp, mask)) if lckd else net
        net.train()

        def step():
            optimizer.zero_grad()
            loss(call(x), y).backward()
            optimizer.step()

        repeats = args.repeats
    else:
        volume = torch.randn(1, 4, *args.volume, device=device)
        net.eval()
        model = inference_network(net, channels_last=args.channels_last)
        predictor, kwargs = model, {}
        if phase in ("combinations", "election"):
            if not lckd:
                return {}
            masks = combination_masks().to(device)
            # the election predicts each single sequence: the first four combinations
            predictor, kwargs = net.forward_combinations, {"masks": masks if phase == "combinations" else masks[:4]}

        @torch.no_grad()
        def step():
            with torch.autocast(device.type, enabled=args.amp):
                sliding_window_inference(volume, patch, args.sw_batch_size, predictor, overlap=args.overlap, **kwargs)

        repeats = args.inference_repeats
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = 0 if device.type == "cuda" else _peak_bytes(device)  # CPU: what the step adds to the process
    full_size = getattr(args, "full_size", False)
    # a full-size inference takes minutes on a CPU: one timed run, no warm-up, no second run to count FLOPs
    seconds = median_seconds(step, repeats, device, warm_up=not (full_size and phase != "train"))
    peak = _peak_bytes(device) - baseline
    result = {
        f"{phase}_s": seconds,
        f"{phase}_peak_mb": peak / 2**20,
        "params": sum(p.numel() for p in net.parameters()),
    }
    if not full_size:
        flops = count_flops(step)
        result.update({f"{phase}_gflop": flops / 1e9, f"{phase}_gflops_per_s": flops / 1e9 / seconds})
    if phase == "combinations":
        result.update(encode_decode_split(net, args, device))
    return result


def encode_decode_split(net: LCKDNet, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Encoder and decoder (fusion + up-path) time of one sliding-window batch: what bounds encode-once.

    With decode/encode = r, 15 combinations cost at best (1 + 15 r) / (1 + r) one forward pass.
    """
    window = torch.randn(args.sw_batch_size, 4, *[args.patch] * 3, device=device)
    mask = torch.ones(1, 4, dtype=torch.bool, device=device)
    with torch.no_grad():
        features = net.encode(window)
        encode_s = median_seconds(lambda: net.encode(window), args.inference_repeats, device)
        decode_s = median_seconds(lambda: net.decode(features, mask), args.inference_repeats, device)
    ratio = decode_s / encode_s
    return {
        "encode_s": encode_s,
        "decode_s": decode_s,
        "decode_over_encode": ratio,
        "combinations_bound": (1 + 15 * ratio) / (1 + ratio),
    }


def grouped_versus_loop(args: argparse.Namespace) -> dict[str, float]:
    """Per-sequence convolutions at the second level: N separate convs in a loop vs one grouped conv."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    channels, size, n = args.filters[1], args.patch // 2, 4
    x = torch.randn(args.batch, n * channels, size, size, size, device=device)
    loop = [torch.nn.Conv3d(channels, channels, 3, padding=1).to(device) for _ in range(n)]
    grouped = torch.nn.Conv3d(n * channels, n * channels, 3, padding=1, groups=n).to(device)
    with torch.no_grad():
        loop_s = median_seconds(lambda: [c(p) for c, p in zip(loop, x.chunk(n, dim=1))], args.repeats, device)
        grouped_s = median_seconds(lambda: grouped(x), args.repeats, device)
    return {"loop_s": loop_s, "grouped_s": grouped_s, "grouped_over_loop": grouped_s / loop_s}


def _in_fresh_process(function: Callable, *args) -> dict:
    """Run ``function(*args)`` in a new process, so its peak memory is its own (spawned: a fork of a process that
    has run torch or data loading threads can deadlock)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def time_and_memory_ratios(lckd: dict[str, float], dyn: dict[str, float]) -> dict[str, float]:
    """LCKDNet / DynUNet time and peak memory, and the 15-combination evaluation against one inference."""
    return {
        "train_step_ratio": lckd["train_s"] / dyn["train_s"],
        "inference_ratio": lckd["inference_s"] / dyn["inference_s"],
        "peak_memory_ratio": lckd["train_peak_mb"] / dyn["train_peak_mb"],
        "inference_peak_memory_ratio": lckd["inference_peak_mb"] / dyn["inference_peak_mb"],
        "combinations_ratio": lckd["combinations_s"] / lckd["inference_s"],
        "decode_over_encode": lckd["decode_over_encode"],
        "combinations_bound": lckd["combinations_bound"],
    }


def run(args: argparse.Namespace) -> dict:
    results: dict[str, dict[str, float]] = {name: {} for name in MODELS}
    for name in MODELS:
        for phase in ("train", "inference", "combinations"):
            results[name].update(_in_fresh_process(measure_phase, name, phase, args))
    report: dict = {"device": args.device, "settings": vars(args), **results}
    dyn = results["dynunet"]
    for name in ("lckdnet", "lckdnet_per_modality"):
        lckd = results[name]
        ratios = {
            **time_and_memory_ratios(lckd, dyn),
            "params_ratio": lckd["params"] / dyn["params"],
            "train_flop_ratio": lckd["train_gflop"] / dyn["train_gflop"],
            "inference_flop_ratio": lckd["inference_gflop"] / dyn["inference_gflop"],
            "train_flops_efficiency": lckd["train_gflops_per_s"] / dyn["train_gflops_per_s"],
            "inference_flops_efficiency": lckd["inference_gflops_per_s"] / dyn["inference_gflops_per_s"],
        }
        if name == "lckdnet":
            report.update(ratios)
        else:
            report["per_modality_encoders"] = ratios
    report["grouped_conv"] = _in_fresh_process(grouped_versus_loop, args)
    return report


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
    before_rss, before_peak = _rss_bytes(), _peak_bytes(torch.device("cpu"))
    start = time.perf_counter()
    dataset = parser.get_parsed_content("train::dataset")
    cases = len(dataset)
    if mode == "disk":
        for index in range(cases):  # the first epoch preprocesses and writes each case
            dataset[index]
    preprocess_s = (time.perf_counter() - start) / cases
    if mode == "memory":
        cached = sum(_cached_bytes(item) for item in dataset._cache) / cases
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
        "peak_rss_growth_mb": (_peak_bytes(torch.device("cpu")) - before_peak) / 2**20,
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
        report[f"cache_{mode}"] = _in_fresh_process(measure_cache, str(data), mode, args)
    results: dict[str, dict[str, float]] = {"dynunet": {}, "lckdnet": {}}
    for name in results:
        for phase in ("train", "inference", "election", "combinations"):
            results[name].update(_in_fresh_process(measure_phase, name, phase, args))
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


ROWS = [
    ("params", "parameters", "{:.3g}"),
    ("train_gflop", "train step GFLOP", "{:.1f}"),
    ("train_s", "train step s", "{:.3f}"),
    ("train_gflops_per_s", "train GFLOP/s", "{:.1f}"),
    ("train_peak_mb", "train peak MB", "{:.0f}"),
    ("inference_gflop", "inference GFLOP", "{:.1f}"),
    ("inference_s", "inference s", "{:.3f}"),
    ("inference_gflops_per_s", "inference GFLOP/s", "{:.1f}"),
    ("inference_peak_mb", "inference peak MB", "{:.0f}"),
    ("combinations_s", "15 combinations s", "{:.3f}"),
]


def print_table(report: dict) -> None:
    settings = report["settings"]
    print(
        f"device {report['device']}, {settings['threads']} threads, patch {settings['patch']}^3, volume "
        f"{settings['volume']}, LCKDNet {settings['filters']}, DynUNet {settings['baseline_filters']}"
    )
    header = f"{'':22}{'DynUNet':>10}{'LCKD shared':>13}{'ratio':>7}{'LCKD per-seq':>14}{'ratio':>7}"
    print(header)
    dyn, shared, per = report["dynunet"], report["lckdnet"], report["lckdnet_per_modality"]
    for key, label, form in ROWS:
        cells = [form.format(dyn[key]) if key in dyn else "-"]
        for model in (shared, per):
            cells += [form.format(model[key]), f"{model[key] / dyn[key]:.2f}" if key in dyn else "-"]
        print(f"{label:22}{cells[0]:>10}{cells[1]:>13}{cells[2]:>7}{cells[3]:>14}{cells[4]:>7}")
    print("\nratios (LCKDNet shared / DynUNet unless noted):")
    for key in (
        "train_step_ratio",
        "inference_ratio",
        "peak_memory_ratio",
        "inference_peak_memory_ratio",
        "params_ratio",
        "train_flop_ratio",
        "train_flops_efficiency",
        "inference_flops_efficiency",
        "combinations_ratio",
        "decode_over_encode",
        "combinations_bound",
    ):
        print(f"  {key:30}{report[key]:6.2f}   per-sequence encoders: {report['per_modality_encoders'][key]:.2f}")
    grouped = report["grouped_conv"]
    print(
        f"  grouped conv / loop of 4 convs (level 2): {grouped['grouped_over_loop']:.2f} "
        f"({grouped['grouped_s'] * 1e3:.1f} ms vs {grouped['loop_s'] * 1e3:.1f} ms)"
    )


def main() -> None:
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--patch", type=int, default=128, help="training patch and sliding-window edge")
    parser.add_argument("--volume", type=int, nargs=3, default=[240, 240, 155], help="inference volume (BraTS size)")
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64, 128, 160], help="LCKDNet widths")
    parser.add_argument(
        "--baseline-filters", type=int, nargs="+", default=None, help="DynUNet widths (default: DynUNet's own)"
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--sw-batch-size", type=int, default=2)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5, help="timed train steps (after one warm-up)")
    parser.add_argument("--inference-repeats", type=int, default=5, help="timed inferences (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--amp", action="store_true", help="inference under torch.autocast (GPU)")
    parser.add_argument("--channels-last", action="store_true", help="inference with channels_last_3d weights")
    parser.add_argument(
        "--quick", action="store_true", help="patch 32, volume 48^3, 4 levels, 3 repeats: about a minute"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--full-size", action="store_true", help="BraTS-scale data, memory and per-case times")
    parser.add_argument("--cases", type=int, default=20, help="--full-size: phantoms to write and cache")
    parser.add_argument("--data", default="data/phantoms_full", help="--full-size: where the phantoms are kept")
    args = parser.parse_args()
    if args.quick:
        args.patch, args.volume = 32, [48, 48, 48]
        args.filters, args.repeats, args.inference_repeats = args.filters[:4], 3, 3
    if args.baseline_filters is None:  # DynUNet's default widths for as many levels
        args.baseline_filters = [min(2 ** (5 + i), 320) for i in range(len(args.filters))]
    if args.full_size:
        args.repeats, args.inference_repeats = min(args.repeats, 2), 1
        report = run_full_size(args)
    else:
        report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.full_size:
        print_full_size(report)
    else:
        print_table(report)


if __name__ == "__main__":
    main()
