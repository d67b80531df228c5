"""What a workflow does before its engine runs, as each config's ``initialize`` calls it (the command line was
checked when the config imported the package, see ``bundle/__init__.py``): the checks and set-up that must happen in a
fixed order (the process group, the settings, the metadata file, the lock on the model folder, the seeds), and for
training the checkpoints attached and a stopped run resumed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch.distributed as dist
from ignite.engine import Engine
from monai.utils import set_determinism

from bundle.distributed import init_distributed
from bundle.flags import flag
from bundle.handlers.checkpoint import AtomicCheckpointSaver, resume_from_latest, set_aside
from bundle.io import lock_folder
from bundle.metadata import read_metadata
from bundle.settings import check_settings, config_settings

__all__ = ["is_first_process", "run_name", "begin_run", "start_training"]


def is_first_process() -> bool:
    """Whether this process writes the shared files: always outside a process group, rank 0 inside one.

    Example:
        >>> is_first_process()
        True
    """
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def run_name(workflow: str) -> str:
    """The MLflow run name of a ``workflow`` started now, e.g. ``train_20261205_163000``."""
    return f"{workflow}_{time.strftime('%Y%m%d_%H%M%S')}"


def begin_run(
    writable: Sequence[str | os.PathLike] = (),
    metadata_file: str | os.PathLike | None = None,
    lock: str | os.PathLike | None = None,
    seed: int | None = 0,
    distributed: Any = False,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Everything a workflow checks and sets up before its engine is built, in this order.

    1. the process group, when ``distributed`` (a boolean setting, read with :func:`bundle.flags.flag`), so that
       the device check and the lock below know the rank;
    2. the settings and the output folders (:func:`bundle.settings.check_settings`), all problems in one error;
    3. ``metadata_file``, which an election will update (checked to be writable JSON), when given;
    4. the lock on ``lock`` (the model folder), in the first process only;
    5. the seeds (``monai.utils.set_determinism``), unless ``seed`` is ``None``.

    Args:
        writable: folders the workflow writes to.
        metadata_file: the metadata.json the run writes into, if any.
        lock: a folder that one run at a time may write (training's ``ckpt_dir``).
        seed: the seed of every generator.
        distributed: the ``distributed`` setting.
        settings: the settings to check; ``None`` (from a config's ``initialize``): those of the config being run
            (:func:`bundle.settings.config_settings`).
    """
    if flag(distributed, "distributed"):
        init_distributed()
    check_settings(config_settings() if settings is None else settings, writable=writable)
    if metadata_file is not None:
        read_metadata(metadata_file, writable=True)
    if lock is not None and is_first_process():
        lock_folder(lock)
    if seed is not None:
        set_determinism(seed=seed)


def start_training(
    trainer: Engine, loss: Any, latest_saver: AtomicCheckpointSaver, ckpt_dir: str | os.PathLike, resume: Any
) -> None:
    """Attach the loss's terms and the periodic checkpoints to ``trainer``, then resume a stopped run from the newest
    checkpoint in ``ckpt_dir`` (``resume`` true, the default) or set an earlier run's checkpoints aside (``resume``
    false, first process only) so that the next resume continues this run.

    Args:
        trainer: the training engine.
        loss: an ``LCKDLoss`` (its ``attach`` logs the loss terms per iteration).
        latest_saver: the saver of the periodic checkpoints, whose ``save_dict`` a resume loads.
        ckpt_dir: the model folder.
        resume: the ``resume`` setting (read with :func:`bundle.flags.flag`).
    """
    loss.attach(trainer)
    latest_saver.attach(trainer)
    if flag(resume, "resume"):
        resume_from_latest(trainer, ckpt_dir, latest_saver.save_dict, latest_saver=latest_saver)
    elif is_first_process():
        set_aside(ckpt_dir)
