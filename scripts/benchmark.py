"""Measure LCKDNet against MONAI's DynUNet on this machine and print ratios (LCKDNet / DynUNet).

    python scripts/benchmark.py --quick          # small sizes, under a minute on a 2-core CPU
    python scripts/benchmark.py --json           # one JSON object with the ratios

Train step = forward + backward + optimizer step (CKD on for LCKDNet); inference = sliding-window
inference of one 4-sequence volume; FLOPs from ``torch.utils.flop_counter.FlopCounterMode``. Medians of
``--repeats`` runs after a warm-up. Peak memory and the 15-combination timing are not measured yet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet
from torch.utils.flop_counter import FlopCounterMode

from bundle.losses import LCKDLoss
from bundle.networks import LCKDNet

TEACHERS = {"ET": "t1ce", "TC": "t1ce", "WT": "flair"}


def median_seconds(step: Callable[[], object], repeats: int, device: torch.device) -> float:
    step()  # warm-up
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


def flops(step: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def build(args: argparse.Namespace, device: torch.device) -> dict[str, torch.nn.Module]:
    levels = len(args.filters)
    kernels, strides = [3] * levels, [1] + [2] * (levels - 1)
    lckd = LCKDNet(filters=args.filters, kernel_size=kernels, strides=strides).to(device)
    dyn = DynUNet(3, 4, 3, kernels, strides, strides[1:], filters=args.baseline_filters, res_block=True).to(device)
    return {"lckdnet": lckd, "dynunet": dyn}


def measure(name: str, net: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    patch = [args.patch] * 3
    x = torch.randn(args.batch, 4, *patch, device=device)
    y = (torch.rand(args.batch, 3, *patch, device=device) > 0.5).float()
    mask = torch.ones(args.batch, 4, dtype=torch.bool, device=device)
    loss = LCKDLoss(teachers=TEACHERS) if name == "lckdnet" else LCKDLoss()
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
    call = (lambda inp: net(inp, mask)) if name == "lckdnet" else net

    def train_step():
        net.train()
        optimizer.zero_grad()
        loss(call(x), y).backward()
        optimizer.step()

    volume = torch.randn(1, 4, *args.volume, device=device)

    @torch.no_grad()
    def infer():
        net.eval()
        sliding_window_inference(volume, patch, args.sw_batch_size, net, overlap=args.overlap)

    train_seconds = median_seconds(train_step, args.repeats, device)
    infer_seconds = median_seconds(infer, max(1, args.repeats // 2), device)
    train_flops = flops(train_step)
    infer_flops = flops(infer)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "train_step_s": train_seconds,
        "inference_s": infer_seconds,
        "train_gflop": train_flops / 1e9,
        "inference_gflop": infer_flops / 1e9,
        "train_gflops_per_s": train_flops / 1e9 / train_seconds,
        "inference_gflops_per_s": infer_flops / 1e9 / infer_seconds,
    }


def main() -> None:
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes: patch 32, volume 64^3, 4 levels, 3 repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.quick:
        args.patch, args.volume, args.repeats = 32, [64, 64, 64], 3
        args.filters = [8, 16, 32, 64]
    if args.baseline_filters is None:
        args.baseline_filters = [min(2 ** (5 + i), 320) for i in range(len(args.filters))]
    device = torch.device(args.device)
    results = {name: measure(name, net, args, device) for name, net in build(args, device).items()}
    lckd, dyn = results["lckdnet"], results["dynunet"]
    ratios = {
        "train_step_ratio": lckd["train_step_s"] / dyn["train_step_s"],
        "inference_ratio": lckd["inference_s"] / dyn["inference_s"],
        "params_ratio": lckd["params"] / dyn["params"],
        "train_flop_ratio": lckd["train_gflop"] / dyn["train_gflop"],
        "train_flops_efficiency": lckd["train_gflops_per_s"] / dyn["train_gflops_per_s"],
        "inference_flops_efficiency": lckd["inference_gflops_per_s"] / dyn["inference_gflops_per_s"],
    }
    if args.json:
        print(
            json.dumps(
                {"device": str(device), "settings": vars(args) | {"volume": args.volume}, **results, **ratios}, indent=2
            )
        )
        return
    print(
        f"device {device}, patch {args.patch}^3, volume {args.volume}, LCKDNet {args.filters}, DynUNet {args.baseline_filters}"
    )
    keys = list(lckd)
    print(f"{'':24}{'LCKDNet':>12}{'DynUNet':>12}{'ratio':>8}")
    for key in keys:
        print(f"{key:24}{lckd[key]:>12.4g}{dyn[key]:>12.4g}{lckd[key] / dyn[key]:>8.2f}")


if __name__ == "__main__":
    main()
