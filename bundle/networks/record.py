"""The record a trained LCKDNet carries in its weights: its constructor keys, the preprocessing it was trained
with, and its teacher set (with, for a federated model, the validation cases of each site behind it).

``models/model.pt`` is a plain ``state_dict`` (model-zoo's ``ckpt_export`` loads it without
``key_in_ckpt``), whose ``_extra_state`` entry is :meth:`LCKDNet.get_extra_state`. Election,
evaluation and inference build the network from it, so a model trained with non-default ``filters``
or ``strides`` runs without repeating them, prepare its input on the grid and with the window it was trained
with (:func:`model_preprocessing`), and report the teacher set it holds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from bundle.conventions import check_teachers
from bundle.errors import InputError
from bundle.io import load_checkpoint, unreadable_reason
from bundle.networks.lckdnet import LCKDNet, decode_record, plain

__all__ = [
    "PREPROCESSING_DEFAULTS",
    "read_record",
    "network_from_record",
    "model_preprocessing",
    "recorded_teachers",
    "record_election",
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

_APPLIED = {"intensity": "nonzero_zscore", "crop": "foreground"}

logger = logging.getLogger(__name__)


def read_record(checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
    """The record in ``checkpoint`` (a ``state_dict``, or a training checkpoint's ``"model"``); ``None`` if it has none.

    Returns ``None`` too when ``checkpoint`` is ``None`` or absent (a model not trained yet); a file that
    exists but cannot be read is an error (see :func:`bundle.io.load_checkpoint`).
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
    for key, applied in _APPLIED.items():
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


def recorded_teachers(checkpoint: str | os.PathLike, modalities: Sequence[str]) -> dict[str, str] | None:
    """The teacher set ``checkpoint`` records, checked against ``modalities``; ``None`` before any election."""
    record = read_record(checkpoint)
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
