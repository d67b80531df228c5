"""Checkpoints that survive a killed run, and resuming from the latest one.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``, to keep files group-readable), so a
run killed while saving leaves a truncated file. :class:`AtomicCheckpointSaver` is the same handler
writing through :func:`bundle.io.atomic_write` (temp file, fsync, rename, the usual permissions).
:func:`resume_from_latest` makes re-running the same training command continue where it stopped.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.networks.utils import get_state_dict

from bundle.errors import InputError
from bundle.io import atomic_write
from bundle.networks.model_file import load_checkpoint, read_record, state_differences

__all__ = [
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "non_finite_entries",
    "set_aside",
    "latest_checkpoint",
    "resume_from_latest",
]

logger = logging.getLogger(__name__)


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` that writes atomically, deletes replaced files only after, and can use one fixed name.

    Ignite's ``Checkpoint`` asks its saver to remove the checkpoint being replaced *before* it writes the
    new one, so a full disk or a kill in between would leave no checkpoint at all. This saver only notes
    the removal and carries it out after the next write has succeeded (never deleting the file it just
    wrote): a failed write keeps the previous checkpoint, a kill in between leaves both, and resuming takes
    the newest.

    Args:
        dirname: folder of the checkpoints (created if needed).
        filename: fixed file name (e.g. ``model.pt``); ``None`` uses Ignite's generated names.
        on_save: called with Ignite's save metadata (``score_name``, ``priority``) after each successful write.
    """

    def __init__(
        self,
        dirname: str | os.PathLike,
        filename: str | None = None,
        on_save: Callable[[Mapping | None], None] | None = None,
    ) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename
        self.on_save = on_save
        self.replaced: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        written = self.filename or filename
        poisoned = non_finite_entries(checkpoint.get("model", {}))
        if poisoned:
            raise InputError(
                f"refusing to write {Path(self.dirname) / written}: {len(poisoned)} weight tensors of the model hold NaN "
                f"or Inf (e.g. {poisoned[0]}); the previous checkpoint is kept. Training diverged: lower learning_rate "
                "or turn amp off, and run again."
            )
        super().__call__(checkpoint, written, metadata)
        for old in dict.fromkeys(self.replaced):
            if old != written and (Path(self.dirname) / old).exists():
                super().remove(old)
        self.replaced = []
        if self.on_save is not None:
            self.on_save(metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        try:
            atomic_write(path, lambda file: func(checkpoint, file, **self.kwargs))
        except OSError as error:
            raise InputError(
                f"could not write checkpoint {path} ({error.strerror or error}); the previous checkpoint is kept. "
                "Free disk space or point ckpt_dir at another disk, then run the same command again to resume."
            ) from error

    def remove(self, filename: str) -> None:
        """Remove ``filename`` once the next checkpoint is written (see the class docstring)."""
        self.replaced.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` (same arguments) whose files are written atomically, replaced files deleted after.

    Args:
        args, kwargs: those of MONAI's ``CheckpointSaver``.
        on_key_metric_save: called after the best-metric checkpoint (``models/model.pt``) is written, with Ignite's
            save metadata; e.g. :meth:`bundle.handlers.ElectionHandler.model_saved`, which names that model's
            teachers in metadata.json.
    """

    def __init__(
        self, *args: Any, on_key_metric_save: Callable[[Mapping | None], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        metric = kwargs.get("key_metric_name")

        def saved(metadata: Mapping | None) -> None:  # Ignite names every key metric "key_metric"
            if on_key_metric_save is not None:
                on_key_metric_save({**(metadata or {}), "score_name": metric or "key_metric"})

        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                callback = saved if checkpoint is self._key_metric_checkpoint else None
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, checkpoint.save_handler.filename, callback)

    def state_dict(self) -> dict[str, Any]:
        """The best-metric bookkeeping (the key-metric checkpointer's state), to save in the periodic checkpoints."""
        return self._key_metric_checkpoint.state_dict() if self._key_metric_checkpoint is not None else {}

    def replace_after_next_save(self, filename: str) -> None:
        """Delete ``filename`` (in ``save_dir``) once the next periodic checkpoint is written, e.g. the one resumed from."""
        if self._interval_checkpoint is not None:
            self._interval_checkpoint.save_handler.remove(filename)


def non_finite_entries(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold a NaN or an infinity."""
    return [
        name
        for name, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()
    ]


def set_aside(ckpt_dir: str | os.PathLike, prefix: str = "latest", model: str = "model.pt") -> Path | None:
    """Move an earlier run's checkpoints (``<prefix>_*.pt`` and ``model``) out of the way of a run that starts over.

    A training started with ``resume: false`` owns none of them; left in ``ckpt_dir``, the next resumed run would
    take the earlier run's newest checkpoint for its own (and delete the new run's), and the new run's first
    validation would replace the earlier best model. They go to ``ckpt_dir/set_aside_<time>/``, not deleted.

    Returns:
        The folder they went to, or ``None`` when there was nothing to set aside.
    """
    folder = Path(ckpt_dir)
    earlier = sorted(folder.glob(f"{prefix}_*.pt")) + ([folder / model] if (folder / model).is_file() else [])
    if not earlier:
        return None
    target = folder / f"set_aside_{time.strftime('%Y%m%d_%H%M%S')}"
    target.mkdir(exist_ok=True)
    for path in earlier:
        os.replace(path, target / path.name)
    logger.warning(
        f"resume is false: this training starts over, so the earlier run's {', '.join(p.name for p in earlier)} were "
        f"moved to {target} (not deleted)."
    )
    return target


def latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "latest") -> Path | None:
    """The ``<prefix>_*.pt`` file of ``ckpt_dir`` with the highest epoch (or iteration) number, if any."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None

    def step(path: Path) -> int:
        found = re.search(r"=(\d+)\.pt$", path.name)
        return int(found.group(1)) if found else -1

    candidates = sorted(folder.glob(f"{prefix}_*.pt"), key=step)
    return candidates[-1] if candidates else None


def resume_from_latest(
    trainer: Engine,
    ckpt_dir: str | os.PathLike,
    load_dict: Mapping[str, Any],
    prefix: str = "latest",
    latest_saver: AtomicCheckpointSaver | None = None,
) -> Path | None:
    """Continue an interrupted training from the newest ``<prefix>_*.pt`` of ``ckpt_dir``.

    Everything in ``load_dict`` (network with its record, optimizer, LR scheduler, trainer's epoch and
    iteration, the election, and the best-model saver's best metric) is restored when the trainer starts
    (MONAI ``CheckpointLoader``); a run that had finished stops at once. Older ``<prefix>_*.pt`` files,
    which a run killed between writing a checkpoint and deleting the one it replaces leaves behind, are
    deleted once the newest has loaded; the best metric restored, a worse model does not replace the
    best one after the restart.

    Args:
        trainer: the training engine.
        ckpt_dir: folder of the checkpoints.
        load_dict: the ``save_dict`` of the saver that wrote them.
        prefix: file prefix of the periodic checkpoints.
        latest_saver: the saver of the periodic checkpoints; the file resumed from is deleted once it has
            written the next one (Ignite does not know the files of an earlier process).

    Returns:
        The checkpoint resumed from, or ``None`` when there is none (a new training).

    Raises:
        InputError: when the checkpoint cannot be read or was written by a different model.
    """
    path = latest_checkpoint(ckpt_dir, prefix)
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    network = load_dict.get("model")
    if network is not None and "model" in checkpoint:
        missing, unexpected, reshaped = state_differences(get_state_dict(network), checkpoint["model"])
        differing = sorted(missing + unexpected) or reshaped
        if differing:
            raise InputError(
                f"{path} was written by a different model (e.g. {differing[:3]} differ), so this training cannot resume "
                f"from it. Use the settings it was trained with, or move {ckpt_dir} away (or pass --resume false) "
                "to start a new training."
            )
    missing = sorted(set(load_dict) - set(checkpoint))
    if missing:
        raise InputError(
            f"{path} lacks {missing} needed to resume; it is not a training checkpoint of this bundle. "
            f"Move it out of {ckpt_dir} or pass --resume false."
        )
    CheckpointLoader(load_path=str(path), load_dict=dict(load_dict), map_location="cpu").attach(trainer)
    for older in Path(ckpt_dir).glob(f"{prefix}_*.pt"):
        if older != path:  # left by a run killed between writing its newest checkpoint and deleting this one
            older.unlink()
    if latest_saver is not None:
        latest_saver.replace_after_next_save(path.name)
    trainer_state = checkpoint.get("trainer", {})
    epoch = trainer_state.get("epoch") or trainer_state.get("iteration", 0) // max(
        1, trainer_state.get("epoch_length") or 1
    )
    logger.info(
        f"resuming from {path} (epoch {epoch}, teachers "
        f"{(read_record(path) or {}).get('teachers')}); move {ckpt_dir} away or pass --resume false to start over."
    )
    return path
