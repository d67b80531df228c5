"""Federated LCKD with NVIDIA FLARE: each site trains the bundle's train.json through MONAI's ``MonaiAlgo``;
the server averages the weights (FedAvg) and elects the teachers from every site's single-modality Dice.

Needs the ``fl`` extra (``pip install .[fl]``); ``import bundle`` does not import this package.
"""

from bundle.federated.protocol import (
    ELECT_META_KEY,
    ELECTION_META_KEY,
    SUMMARY_META_KEY,
    election_due,
    federated_election,
    network_weights,
)

__all__ = [
    "ELECTION_META_KEY",
    "ELECT_META_KEY",
    "SUMMARY_META_KEY",
    "election_due",
    "federated_election",
    "network_weights",
]
