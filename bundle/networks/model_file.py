"""The model file: ``models/model.pt`` (a plain ``state_dict``) or a training checkpoint (``{"model": state_dict,
...}``), read once, and everything read from or written to it: the record its weights carry (constructor keys, the
preprocessing it was trained with, its teacher set and, for a federated model, the validation cases of each site
behind it), the network built from that record with the weights loaded, the comparison of weights with a network,
and the atomic save.

The record is the network's ``_extra_state`` (:meth:`LCKDNet.get_extra_state`), so model-zoo's ``ckpt_export`` loads
the file without ``key_in_ckpt``. Election, evaluation and inference build the network from it, so a model trained
with non-default ``filters`` or ``strides`` runs without repeating them, prepare its input on the grid and with the
window it was trained with (:func:`model_preprocessing`), and report the teacher set it holds
(:func:`recorded_teachers`). Every reader goes through :func:`load_checkpoint`, which reads a file from disk once
per version of it (:data:`DISK_READS` counts the reads; :func:`model_sha256` hashes the same bytes).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import json
import logging
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bundle.conventions import check_teachers
from bundle.distributed import unwrap
from bundle.errors import InputError, InputFileError, brief
from bundle.io import atomic_write, file_signature, unreadable_reason
from bundle.networks.lckdnet import LCKDNet, decode_record, plain
from bundle.transforms.preprocessing import APPLIED_PREPROCESSING

__all__ = [
    "PREPROCESSING_DEFAULTS",
    "DISK_READS",
    "load_checkpoint",
    "model_sha256",
    "read_record",
    "network_from_record",
    "load_network",
    "model_preprocessing",
    "recorded_teachers",
    "record_election",
    "state_differences",
    "mismatch_error",
    "save_weights",
]

PREPROCESSING_DEFAULTS: dict[str, Any] = {
    "pixdim": [1.0, 1.0, 1.0],
    "patch_size": [128, 128, 128],
    "orientation": "RAS",
    "intensity": "nonzero_zscore",
    "crop": "foreground",
    "label_convention": "brats2021",
}
"""What a model's record says of its preprocessing, and the values for a model that records none: the voxel grid
(``pixdim``, mm), the training patch and so the largest inference window (``patch_size``), the orientation, the
intensity normalisation (each sequence z-scored over its non-zero voxels) and crop (to the non-zero voxels, the
brain) this bundle applies, and the label convention of the training data."""

logger = logging.getLogger(__name__)


DISK_READS: collections.Counter[str] = collections.Counter()
"""Reads of each model file from disk in this process, by resolved path (what the configs' one-read rule is measured
with)."""


@functools.lru_cache(maxsize=2)
def _read_from_disk(path: str, signature: str, map_location: str) -> tuple[dict, str]:
    """The file's content and the SHA-256 of its bytes, read from disk once per (path, version, device):
    ``signature`` changes when the file is rewritten (an atomic save makes a new inode), so a cached read is never
    stale. Only the loaded content is kept, not the bytes."""
    DISK_READS[path] += 1
    content = Path(path).read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    return torch.load(io.BytesIO(content), map_location=map_location, weights_only=True), digest


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the model file, from the same single read as its weights (what metadata.json's Dice table and the
    clinical report name the weights by).

    Raises:
        InputError: as :func:`load_checkpoint`, for a file that is absent or not a checkpoint.

    Example:
        >>> import tempfile, torch
        >>> path = tempfile.mkdtemp() + "/m.pt"; torch.save({}, path)
        >>> model_sha256(path) == hashlib.sha256(open(path, "rb").read()).hexdigest()
        True
    """
    return _checked_read(path, "cpu")[1]


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``: a file holding Python code is refused, never run.

    A file already read in this process, and not rewritten since, is not read again: the result is a new dict over
    the same tensors (replace entries, never change the tensors in place).

    Raises:
        FileNotFoundError: when ``path`` does not exist, saying how to make one.
        ValueError: when the file is not a readable checkpoint, or holds objects other than weights.
    """
    return dict(_checked_read(path, map_location)[0])


def _checked_read(path: str | os.PathLike, map_location: Any) -> tuple[dict, str]:
    """:func:`_read_from_disk` of ``path``, with every way the file can be unusable turned into a one-line error."""
    reason = unreadable_reason(path)
    if reason == "absent":
        raise InputFileError(
            f"checkpoint {path} does not exist; train first (python -m monai.bundle run --config_file configs/train.json) "
            "or point --ckpt_path at a trained model.pt."
        )
    if reason:
        raise InputError(f"checkpoint {path} is {reason}; point --ckpt_path at a trained model.pt.")
    try:
        checkpoint, digest = _read_from_disk(str(Path(path).resolve()), file_signature(path), str(map_location))
    except Exception as error:  # torch raises several types for truncated or foreign files
        message = str(error)
        # PyTorch's own message suggests weights_only=False, which would run what the file holds: never repeat it
        found = re.search(r"GLOBAL ([\w.]+)", message) if isinstance(error, pickle.UnpicklingError) else None
        if found:
            raise InputError(
                f"{path} holds Python objects other than weights ({found.group(1)}) and was refused unread: loading "
                "it could run code. Use a checkpoint this bundle wrote, from a source you trust."
            ) from None
        reason = "not a pickle" if "Weights only load failed" in message else brief(error)
        raise InputError(
            f"{path} is not a readable PyTorch checkpoint ({reason}); "
            "it is truncated or not a checkpoint: copy it again or train anew."
        ) from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path} holds a {type(checkpoint).__name__}, expected a dict with a 'model' state dict.")
    return checkpoint, digest


def read_record(checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
    """The record in ``checkpoint`` (a ``state_dict``, or a training checkpoint's ``"model"``); ``None`` if it has none.

    Returns ``None`` too when ``checkpoint`` is ``None`` or absent (a model not trained yet); a file that
    exists but cannot be read is an error (see :func:`load_checkpoint`).
    """
    if checkpoint is None or unreadable_reason(checkpoint) == "absent":
        return None
    state = load_checkpoint(checkpoint)
    state = state.get("model", state)
    record = decode_record(state.get("_extra_state")) if isinstance(state, Mapping) else {}
    return record or None


def network_from_record(checkpoint: str | os.PathLike | None = None, **config: Any) -> LCKDNet:
    """An LCKDNet with the constructor keys recorded in ``checkpoint``, or with ``config`` when it has no record.

    A config key that disagrees with the record is logged as a warning and the record wins, since the
    weights only fit the network they were trained as; other modalities are an error, because the data
    pipeline stacks the config's sequences.

    Args:
        checkpoint: ``models/model.pt`` (absent before training: ``config`` is used).
        config: :class:`LCKDNet` keyword arguments from the config.

    Raises:
        InputError: when the record's modalities differ from ``config["modalities"]``.

    Example:
        >>> net = network_from_record("models/model.pt", filters=[16, 32, 64, 128, 160])  # doctest: +SKIP
    """
    record = read_record(checkpoint)
    keys = dict(config)
    if record:
        recorded = dict(record.get("network", {}))
        if "modalities" in config and list(config["modalities"]) != recorded.get(
            "modalities", list(config["modalities"])
        ):
            raise InputError(
                f"{checkpoint} was trained on modalities {recorded['modalities']}, but modalities is "
                f'{list(config["modalities"])}; pass --modalities "{recorded["modalities"]}".'
            )
        given = {key: plain(value) for key, value in config.items() if key in recorded}
        _warn_record_wins(checkpoint, recorded, given, "the network is built")
        keys.update(recorded)
    return LCKDNet(**keys)


def model_preprocessing(
    checkpoint: str | os.PathLike | None, metadata: Mapping[str, Any] | None = None, **config: Any
) -> dict[str, Any]:
    """The preprocessing the model in ``checkpoint`` was trained with, which inference and evaluation must apply.

    The record in the checkpoint decides; without one (a TorchScript-only client such as MONAI Deploy), the copy in
    ``metadata``'s ``lckd`` block. A config value (``None``: not given) that disagrees is logged once as a warning and
    the record wins, as for the network keys; the label convention is the exception, since the input dataset's own
    convention decides what inference writes and how evaluation reads the truth. A model that records nothing (trained
    before models carried their preprocessing) takes the config values, else :data:`PREPROCESSING_DEFAULTS`.

    Args:
        checkpoint: ``models/model.pt`` (may be absent).
        metadata: the bundle's metadata (``@_meta_`` in a config), consulted when the checkpoint has no record.
        config: keys of :data:`PREPROCESSING_DEFAULTS` from the config, ``None`` where not given.

    Raises:
        InputError: an unknown key, or a model trained with an intensity normalisation or crop this bundle does not
            apply.

    Example:
        >>> model_preprocessing(None, pixdim=[3.0, 3.0, 3.0])["pixdim"]
        [3.0, 3.0, 3.0]
    """
    unknown = sorted(set(config) - set(PREPROCESSING_DEFAULTS))
    if unknown:
        raise InputError(f"unknown preprocessing keys {unknown}; known: {list(PREPROCESSING_DEFAULTS)}.")
    given = {key: json.loads(json.dumps(value)) for key, value in config.items() if value is not None}
    record = read_record(checkpoint) or {}
    recorded, source = record.get("preprocessing"), checkpoint
    if not recorded and isinstance(metadata, Mapping):
        recorded, source = (metadata.get("lckd") or {}).get("preprocessing"), "metadata.json"
    if not recorded:
        if record:
            logger.warning(
                f"{checkpoint} records no preprocessing (it was trained before models carried theirs); using "
                + ", ".join(f"{k}={v}" for k, v in {**PREPROCESSING_DEFAULTS, **given}.items())
                + ". Pass the values it was trained with if they differ."
            )
        return {**PREPROCESSING_DEFAULTS, **given}
    resolved = {**PREPROCESSING_DEFAULTS, **recorded}
    for key, applied in APPLIED_PREPROCESSING.items():
        if resolved[key] != applied:
            raise InputError(
                f"{source} was trained with {key}={resolved[key]!r}, which this bundle does not apply (it applies "
                f"{key}={applied!r}); run it with the bundle version it was trained with."
            )
    _warn_record_wins(
        source, resolved, {k: v for k, v in given.items() if k != "label_convention"}, "its input is prepared"
    )
    return resolved


def _warn_record_wins(source: Any, recorded: Mapping[str, Any], given: Mapping[str, Any], what: str) -> None:
    """One warning naming the config values that disagree with the record, which wins."""
    differing = [key for key, value in given.items() if value != recorded[key]]
    if differing:
        logger.warning(
            f"{source} was trained with "
            + ", ".join(f"{key}={recorded[key]}" for key in differing)
            + f"; {what} with those, not the config's "
            + ", ".join(f"{key}={given[key]}" for key in differing)
            + "."
        )


def recorded_teachers(model: Any, modalities: Sequence[str]) -> dict[str, str] | None:
    """The teacher set ``model`` records (a network whose weights are loaded, or a model file), checked against
    ``modalities``; ``None`` before any election."""
    record = getattr(unwrap(model), "record", None) if isinstance(model, torch.nn.Module) else read_record(model)
    teachers = (record or {}).get("teachers")
    return check_teachers(teachers, modalities) if teachers else None


def record_election(network: Any, election: Mapping[str, Any] | None) -> None:
    """Put the teacher set of ``election`` (an election block, as in metadata.json) into ``network``'s record, with
    the per-site case counts of a federated election (``election["federated"]``; ``None`` for a local one), so
    that the weights saved next carry them. A network without a record (not an LCKDNet) is left as it is.

    Example:
        >>> net = LCKDNet(filters=(8, 16, 32, 64))
        >>> record_election(net, {"teachers": {"ET": "t1ce", "TC": "t1ce", "WT": "flair"}})
        >>> net.record["teachers"]["WT"], net.record["federated"]
        ('flair', None)
    """
    record = getattr(network, "record", None)
    if record is not None:
        election = election or {}
        record["teachers"] = election.get("teachers")
        record["federated"] = election.get("federated")


def load_network(network: Any, path: str | os.PathLike) -> Any:
    """Load the weights of ``path`` (``{"model": state_dict, ...}`` or a bare state dict) into ``network``, with the
    record they carry (its teacher set and preprocessing land in ``network.record``).

    Returns:
        ``network``, so that a config can build, load and move it in one expression:
        ``$bundle.networks.load_network(@network_def, @ckpt_path).to(@device)``.

    Raises:
        InputError: the file is absent or unreadable, or its weights do not fit the network (other modalities,
            filters or levels).
    """
    state = load_checkpoint(path)
    state = state.get("model", state)
    try:
        network.load_state_dict(state)
    except RuntimeError:
        raise mismatch_error(path, network.state_dict(), state) from None
    return network


def state_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, reshaped)`` entries of a state dict ``found`` against a network's ``expected``.

    A network's record (``_extra_state``) is compared by presence only: its length follows the teacher set.
    """

    def shape(key: str, value: Any) -> tuple:
        return () if key.endswith("_extra_state") else tuple(value.shape)

    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    reshaped = [key for key in expected if key in found and shape(key, expected[key]) != shape(key, found[key])]
    return missing, unexpected, reshaped


def mismatch_error(path: str | os.PathLike, expected: Mapping[str, Any], found: Mapping[str, Any]) -> InputError:
    """The error for weights ``found`` in ``path`` that do not fit a network's state dict ``expected``."""
    missing, unexpected, reshaped = state_differences(expected, found)
    example = ""
    if reshaped:
        key = reshaped[0]
        example = f" (e.g. {key}: {list(found[key].shape)} in the file, {list(expected[key].shape)} here)"
    elif missing or unexpected:
        example = f" (e.g. {(missing or unexpected)[0]})"
    return InputError(
        f"{path} does not fit the network: {len(missing)} weights missing, {len(unexpected)} unexpected and "
        f"{len(reshaped)} of another shape{example}. It was trained with other modalities, filters, kernel_size or "
        "strides: pass the values used in training."
    )


def save_weights(network: Any, path: str | os.PathLike) -> None:
    """Write ``network``'s ``state_dict`` (with its record) into ``path`` atomically.

    A plain ``state_dict`` file (``models/model.pt``) is replaced; in a training checkpoint only its
    ``"model"`` entry is, the optimizer and trainer state are kept.
    """
    state = unwrap(network).state_dict()
    checkpoint = load_checkpoint(path) if unreadable_reason(path) != "absent" else {}
    if "model" in checkpoint:
        checkpoint["model"] = state
    else:
        checkpoint = state
    atomic_write(path, lambda file: torch.save(checkpoint, file))
