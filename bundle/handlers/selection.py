"""Which weights become ``models/model.pt``: the model-selection metric of the validation runs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from torch import nn

from bundle.conventions import check_modalities, combination_masks
from bundle.distributed import unwrap
from bundle.errors import InputError
from bundle.metrics.combinations import combination_dice
from bundle.transforms.labels import PredictionToLabelsd

__all__ = ["SELECTION_METRICS", "selection_metric", "CombinationDiceHandler"]

SELECTION_METRICS = {"combinations": "val_combinations_dice", "all_sequences": "val_mean_dice", "last": "val_epoch"}
"""``select_model`` value -> the validator metric the best-model checkpoint keeps the maximum of."""


def selection_metric(select_model: str) -> str:
    """The validator metric that ``select_model`` selects ``models/model.pt`` by.

    Example:
        >>> selection_metric("combinations")
        'val_combinations_dice'
    """
    if select_model not in SELECTION_METRICS:
        raise InputError(f"select_model must be one of {list(SELECTION_METRICS)}, got {select_model!r}.")
    return SELECTION_METRICS[select_model]


class CombinationDiceHandler:
    """Validator handler: the mean Dice over every modality combination, and the epoch, as metrics.

    After each validation run it scores the validation split under each of the ``2**N - 1`` combinations
    (encoding each window once, as the 15-combination evaluation does) on the label maps inference would write
    (``to_labels``; an empty region predicted empty counts 1), and sets ``engine.state.metrics["val_combinations_dice"]`` to the
    mean over combinations of the mean over cases and regions: what LCKD optimises and what the paper
    reports. It also sets ``val_epoch`` (the training epoch validated), which ``select_model: "last"``
    keeps the maximum of. Attach it before the best-model ``CheckpointSaver`` and the logging handlers.

    Args:
        network: the network being trained (a DDP model is scored as its module).
        data_loader: the validation loader, ``batch_size=1``.
        inferer: e.g. :class:`bundle.networks.CaseMaskInferer`.
        modalities: modality names in channel order.
        device: where to run.
        to_labels: the path from output to label map (:class:`bundle.transforms.PredictionToLabelsd`); default: on
            the network's grid, no post-processing.
        convention: label values of the dataset.
    """

    def __init__(
        self,
        network: nn.Module,
        data_loader: Iterable[dict],
        inferer: Callable,
        modalities: Sequence[str],
        device: torch.device | str = "cpu",
        to_labels: Callable[[dict], Mapping] | None = None,
        convention: str = "brats2021",
    ) -> None:
        self.network = unwrap(network)
        self.data_loader = data_loader
        self.inferer = inferer
        self.masks = combination_masks(check_modalities(modalities))
        self.device = device
        self.to_labels = to_labels or PredictionToLabelsd("pred", transform=None, convention=convention)
        self.convention = convention

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        dice = combination_dice(
            self.network, self.data_loader, self.inferer, self.masks, self.to_labels, self.device, self.convention
        )  # (cases, K, R)
        per_combination = torch.nanmean(dice.double(), dim=(0, 2))
        value = float(per_combination.nanmean())
        engine.state.metrics["val_combinations_dice"] = value if not math.isnan(value) else 0.0
        engine.state.metrics["val_epoch"] = engine.state.epoch
