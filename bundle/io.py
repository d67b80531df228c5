"""Atomic file writes: a reader never sees a half-written file, and a failed write keeps the old one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from bundle.errors import InputError, InputFileError

__all__ = ["atomic_write", "atomic_write_json", "read_json", "load_checkpoint", "load_network", "update_checkpoint"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    Args:
        path: destination; its folder must exist and be writable.
        write: fills the open binary file.

    Returns:
        The destination path.

    Raises:
        OSError: when the folder is not writable or the disk is full; ``path`` is then unchanged.
    """
    target = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600); keep the mode a plain write would give
        os.chmod(temp_name, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`atomic_write`)."""
    text = json.dumps(obj, indent=4) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with an error naming the file when it is missing or malformed."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        raise InputFileError(f"{path} does not exist.") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error}); fix or delete it.") from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code is unpickled).

    Raises:
        FileNotFoundError: when ``path`` does not exist, saying how to make one.
        ValueError: when the file is not a readable checkpoint.
    """
    if not Path(path).is_file():
        raise InputFileError(
            f"checkpoint {path} does not exist; train first (python -m monai.bundle run --config_file configs/train.json) "
            "or point --ckpt_path at a trained model.pt."
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise InputError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}).") from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path} holds a {type(checkpoint).__name__}, expected a dict with a 'model' state dict.")
    return checkpoint


def load_network(network: Any, path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load the weights of ``path`` (``{"model": state_dict, ...}`` or a bare state dict) into ``network``.

    Returns:
        The whole checkpoint, so callers can read its other entries (e.g. the teacher set ``"lckd"``).

    Raises:
        ValueError: when the weights do not fit the network (other modalities, filters or levels).
    """
    checkpoint = load_checkpoint(path, map_location)
    state = checkpoint.get("model", checkpoint)
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        detail = str(error).splitlines()
        raise InputError(
            f"{path} does not fit the network: {' '.join(detail[1:3]).strip() or detail[0]} ... "
            "It was trained with other modalities, filters, kernel_size or strides: pass the values used in training."
        ) from None
    return checkpoint


def update_checkpoint(path: str | os.PathLike, key: str, value: Any) -> None:
    """Set one entry of a checkpoint file, atomically; the weights and other entries are kept."""
    checkpoint = load_checkpoint(path)
    checkpoint[key] = value
    atomic_write(path, lambda file: torch.save(checkpoint, file))
