"""Measure LCKDNet against MONAI's DynUNet on this machine and print ratios (LCKDNet / DynUNet).

    python scripts/benchmark.py --quick          # small sizes, about a minute on a 2-core CPU
    python scripts/benchmark.py --patch 64 --volume 96 96 96   # medium, about 15 minutes there
    python scripts/benchmark.py                  # patch 128^3, BraTS-sized volume 240x240x155
    python scripts/benchmark.py --json           # one JSON object with the ratios

Both models see the same patch and volume. Train step = forward + backward + AdamW step (CKD on
for LCKDNet); inference = sliding-window inference of one 4-sequence volume; "combinations" = all 15
modality combinations of that volume (LCKDNet encodes each window once) against one all-sequence
inference. FLOPs from ``torch.utils.flop_counter.FlopCounterMode``; times are medians of
``--repeats`` runs after a warm-up; peak memory is the growth of the process's peak RSS (CPU) or
``torch.cuda.max_memory_allocated`` (GPU), each phase measured in a fresh process. LCKDNet is
measured with its shared encoder and with one encoder per sequence; a micro-benchmark compares a
loop of per-sequence convolutions with one grouped convolution.

The BraTS-scale data, memory and per-case measurement is ``scripts/measure_full_size.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet
from torch.utils.flop_counter import FlopCounterMode

from bundle.conventions import combination_masks
from bundle.data import DEFAULT_TEACHERS
from bundle.errors import install_excepthook
from bundle.losses import LCKDLoss
from bundle.networks import LCKDNet, inference_network

MODELS = ("dynunet", "lckdnet", "lckdnet_per_modality")


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


def peak_bytes(device: torch.device) -> int:
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
    baseline = 0 if device.type == "cuda" else peak_bytes(device)  # CPU: what the step adds to the process
    full_size = getattr(args, "full_size", False)  # set by scripts/measure_full_size.py
    # a full-size inference takes minutes on a CPU: one timed run, no warm-up, no second run to count FLOPs
    seconds = median_seconds(step, repeats, device, warm_up=not (full_size and phase != "train"))
    peak = peak_bytes(device) - baseline
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


def in_fresh_process(function: Callable, *args) -> dict:
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
            results[name].update(in_fresh_process(measure_phase, name, phase, args))
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
    report["grouped_conv"] = in_fresh_process(grouped_versus_loop, args)
    return report


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


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The settings of the models and phases measured (shared with ``scripts/measure_full_size.py``)."""
    parser = argparse.ArgumentParser(description=description)
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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def with_baseline_filters(args: argparse.Namespace) -> argparse.Namespace:
    if args.baseline_filters is None:  # DynUNet's default widths for as many levels
        args.baseline_filters = [min(2 ** (5 + i), 320) for i in range(len(args.filters))]
    return args


def main() -> None:
    install_excepthook()
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="patch 32, volume 48^3, 4 levels, 3 repeats: about a minute"
    )
    args = parser.parse_args()
    if args.quick:
        args.patch, args.volume = 32, [48, 48, 48]
        args.filters, args.repeats, args.inference_repeats = args.filters[:4], 3, 3
    report = run(with_baseline_filters(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
