"""Which weights become ``models/model.pt``: the model-selection metric of the validation runs."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.handlers import MeanDice, from_engine
from torch import nn

from bundle.conventions import check_modalities, combination_masks
from bundle.distributed import unwrap
from bundle.errors import check_choice
from bundle.handlers.checkpoint import AtomicCheckpointSaver
from bundle.metrics.combinations import combination_dice
from bundle.transforms.labels import PredictionToLabelsd

__all__ = ["SELECTION_METRICS", "selection_metric", "best_model_saver", "region_dice_metrics", "CombinationDiceHandler"]

SELECTION_METRICS = {"combinations": "val_combinations_dice", "all_sequences": "val_mean_dice", "last": "val_epoch"}
"""``select_model`` value -> the validator metric the best-model checkpoint keeps the maximum of."""


def selection_metric(select_model: str) -> str:
    """The validator metric that ``select_model`` selects ``models/model.pt`` by.

    Example:
        >>> selection_metric("combinations")
        'val_combinations_dice'
    """
    check_choice("select_model", select_model, list(SELECTION_METRICS))
    return SELECTION_METRICS[select_model]


def best_model_saver(
    network: nn.Module,
    path: str | os.PathLike,
    select_model: str,
    on_key_metric_save: Callable[[Mapping | None], None] | None = None,
) -> AtomicCheckpointSaver:
    """The validator's handler that writes ``network``'s weights to ``path`` (``models/model.pt``) each time the
    metric ``select_model`` names reaches a new best, atomically.

    Args:
        network: the trained network.
        path: the model file.
        select_model: a key of :data:`SELECTION_METRICS`.
        on_key_metric_save: called after each write, e.g. :meth:`bundle.handlers.ElectionHandler.model_saved`.
    """
    path = Path(path)
    return AtomicCheckpointSaver(
        save_dir=str(path.parent),
        save_dict={"model": network},
        save_key_metric=True,
        key_metric_filename=path.name,
        key_metric_save_state=False,
        key_metric_name=selection_metric(select_model),
        on_key_metric_save=on_key_metric_save,
    )


def region_dice_metrics(regions: Sequence[str] = ("et", "tc", "wt")) -> dict[str, MeanDice]:
    """``val_dice_<region>`` for each region: MONAI's ``MeanDice`` of the validator's ``pred_<region>`` and
    ``label_<region>`` (as ``SplitDimd`` names the regions of a label map).

    Example:
        >>> sorted(region_dice_metrics())
        ['val_dice_et', 'val_dice_tc', 'val_dice_wt']
    """
    return {
        f"val_dice_{region}": MeanDice(
            include_background=True, output_transform=from_engine([f"pred_{region}", f"label_{region}"])
        )
        for region in regions
    }


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
