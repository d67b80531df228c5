"""Joining the process group that torchrun starts, for ``configs/multi_gpu_train.json``."""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from bundle.errors import InputError

__all__ = ["init_distributed", "unwrap"]

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_distributed() -> int:
    """Join torchrun's process group (once): NCCL with one GPU per process on GPUs, gloo on CPUs.

    Processes other than the first then log warnings and errors only, so the log reads as one run's.

    Returns:
        This process's rank.

    Raises:
        InputError: when the process was not started by torchrun.

    Example:
        ``torchrun --nproc_per_node=2 -m monai.bundle run --config_file
        "['configs/train.json','configs/multi_gpu_train.json']"`` calls it first in ``initialize``.
    """
    if not dist.is_initialized():
        missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
        if missing:
            raise InputError(
                f"configs/multi_gpu_train.json runs one process per device under torchrun, but {missing} are not set. "
                "Start it with: torchrun --nproc_per_node=N -m monai.bundle run --config_file "
                "\"['configs/train.json','configs/multi_gpu_train.json']\" (or drop multi_gpu_train.json for one process)."
            )
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)
    return rank


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper; ``network`` otherwise.

    Validation passes run on it: every process scores its own cases, with no gradient synchronisation.
    """
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return network.module if isinstance(network, wrappers) else network
