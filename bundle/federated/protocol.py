"""What travels between the sites and the server of a federated LCKD run, and when the teachers are elected.

Each round the server sends the global weights with two entries in the model's ``meta``: the teacher set in
force (:data:`ELECTION_META_KEY`, the election block that also goes into ``configs/metadata.json``) and whether
the sites must summarise an election (:data:`ELECT_META_KEY`). A site then validates the global model with
each single sequence on its own validation cases and returns, beside its trained weights, only the sums and
counts of :func:`bundle.metrics.teacher_choice.site_election_summary` (:data:`SUMMARY_META_KEY`): no image and no
per-case score leaves it. This module imports no NVIDIA FLARE code, so it is tested without the ``fl`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import torch

from bundle.errors import InputError
from bundle.metrics.teacher_choice import combine_site_elections, undecided_regions

__all__ = [
    "ELECTION_META_KEY",
    "ELECT_META_KEY",
    "SUMMARY_META_KEY",
    "election_due",
    "federated_election",
    "network_weights",
]

ELECTION_META_KEY = "lckd_election"
"""Server -> sites: the election block in force (teachers, combined table, cases per site), ``{}`` before one."""
ELECT_META_KEY = "lckd_elect"
"""Server -> sites: ``True`` when the sites must validate the received model for an election this round."""
SUMMARY_META_KEY = "lckd_election_summary"
"""Site -> server: the site's :func:`~bundle.metrics.teacher_choice.site_election_summary` of the received model."""


def election_due(round_index: int, elect_round: int, reelect_every: int) -> bool:
    """Whether the sites summarise an election of the global model they receive at ``round_index`` (0-based).

    The model received at round ``r`` has been trained for ``r`` rounds, so ``elect_round`` plays the part
    of train.json's ``elect_epoch`` (rounds of warm-up before the first election) and ``reelect_every``
    of its ``reelect_every`` (0 elects once). The teachers elected at round ``r`` distil from round ``r + 1``.

    Raises:
        InputError: when ``elect_round < 1`` or ``reelect_every < 0``.

    Example:
        >>> [r for r in range(8) if election_due(r, elect_round=2, reelect_every=3)]
        [2, 5]
    """
    if elect_round < 1:
        raise InputError(f"elect_round must be >= 1 (rounds of training before the first election), got {elect_round}.")
    if reelect_every < 0:
        raise InputError(f"reelect_every must be >= 0 (0 = elect once), got {reelect_every}.")
    if round_index == elect_round:
        return True
    return reelect_every > 0 and round_index > elect_round and (round_index - elect_round) % reelect_every == 0


def federated_election(
    summaries: Mapping[str, Mapping[str, Any]],
    modalities: Sequence[str],
    round_index: int,
    previous: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The election block of a federated election: as a local election's (``modalities``, ``teachers``,
    ``undecided``, ``election_dice``, ``elected_at``, ``cases``) plus ``federated``: the sites and, per region
    and sequence, how many validation cases of each site stand behind the combined Dice.

    Args:
        summaries: site name -> its :func:`~bundle.metrics.teacher_choice.site_election_summary`.
        modalities: the modality names, in canonical order.
        round_index: the round whose global model was validated.
        previous: the teacher set in force (kept for regions no site's validation cases hold).

    Raises:
        InputError: when no site sent a summary, or a summary has the wrong shape.
    """
    if not summaries:
        raise InputError("a federated election needs at least one site's election summary; none arrived.")
    teachers, table, cases = combine_site_elections(summaries, modalities, previous)
    return {
        "modalities": list(modalities),
        "teachers": teachers,
        "undecided": undecided_regions(table),
        "election_dice": table,
        "elected_at": {"round": int(round_index), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "cases": sum(int(summary.get("validation_cases", 0)) for summary in summaries.values()),
        "federated": {"sites": sorted(summaries), "cases": cases},
    }


def network_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The averageable part of a network's ``state_dict``, detached on the CPU.

    LCKDNet's ``_extra_state`` (its record, UTF-8 JSON in a uint8 tensor) is left out: averaging it across
    sites would corrupt it, and the server writes the record (with the federated teachers) itself.

    Example:
        >>> sorted(network_weights({"w": torch.ones(2), "_extra_state": torch.zeros(3, dtype=torch.uint8)}))
        ['w']
    """
    return {key: value.detach().cpu() for key, value in state.items() if not key.endswith("_extra_state")}
