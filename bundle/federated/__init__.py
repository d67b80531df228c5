"""Federated LCKD with NVIDIA FLARE: each site trains the bundle's train.json through MONAI's ``MonaiAlgo``;
the server averages the weights (FedAvg) and elects the teachers from every site's single-modality Dice.

Needs the ``fl`` extra (``pip install .[fl]``) for :mod:`~bundle.federated.controller` and the job;
``import bundle`` does not import this package. What travels between sites and server is
:mod:`~bundle.federated.protocol`, re-exported here.
"""

from bundle.federated import protocol
from bundle.federated.protocol import *  # noqa: F403

__all__ = list(protocol.__all__)
