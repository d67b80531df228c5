"""The teacher election of LCKD during training: an Ignite handler electing at scheduled epochs."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import nn

from bundle.conventions import check_modalities
from bundle.distributed import unwrap
from bundle.errors import InputError, check_whole_number
from bundle.metadata import update_metadata
from bundle.metrics.combinations import combination_dice
from bundle.metrics.teacher_choice import (
    LOW_WIN_RATE,
    bootstrap_win_rate,
    elect_teachers,
    paired_cases,
    undecided_regions,
)
from bundle.networks.model_file import record_election
from bundle.reports.logs import format_election, format_teachers
from bundle.transforms.labels import PredictionToLabelsd

__all__ = ["ElectionHandler", "check_elect_epoch", "check_reelect_every"]

MODEL_ELECTION = "model_election"
"""Key, in a training checkpoint's ``lckd`` entry, of the election of the weights last written to model.pt."""


def check_elect_epoch(elect_epoch: Any) -> int:
    """``elect_epoch`` as :class:`ElectionHandler` takes it (also checked by ``bundle.settings`` before a workflow
    reads data). Raises InputError for anything but a whole number >= 1."""
    return check_whole_number("elect_epoch", elect_epoch, 1, "epochs of warm-up before the first election")


def check_reelect_every(reelect_every: Any) -> int:
    """``reelect_every`` as :class:`ElectionHandler` takes it (also checked by ``bundle.settings``). Raises
    InputError for anything but a whole number >= 0."""
    return check_whole_number("reelect_every", reelect_every, 0, "0 = elect once")


logger = logging.getLogger(__name__)


class ElectionHandler:
    """Ignite handler: elect per-region teachers on the validation split and switch on CKD.

    At the end of epoch ``elect_epoch`` (after a warm-up without distillation) and then every
    ``reelect_every`` epochs, the network is validated once per single-modality mask; per region the
    modality with the best mean Dice over the cases that have every sequence becomes the teacher (ties go to the
    earlier modality; :func:`bundle.metrics.elect_teachers`). The
    teacher set is given to the loss and the network's record, kept in :meth:`state_dict`, so checkpoints carry it
    and a resumed run needs no new election, and written atomically into ``metadata_file`` under ``"lckd"``. That
    block names the teachers of the weights in ``models/model.pt`` (:meth:`model_saved`, which the best-model saver
    calls), so metadata.json, the model's record and the logs agree; a later election that no saved model carries
    yet is kept beside them as ``last_election``.
    A bootstrap over validation cases gives each teacher's win rate; under 70 % is logged as a warning.
    Attach it before the ``ValidationHandler`` and the logging handlers, so that the best-model
    checkpoint of an election epoch carries the new teachers and the election's Dice table reaches
    StatsHandler, TensorBoard and MLflow as that epoch's metrics (``election_dice_<region>_<modality>``).

    Args:
        network: the network being trained (a ``DistributedDataParallel`` model is validated as its module).
        data_loader: validation loader, ``batch_size=1`` (the validation split, disjoint from training); under
            DDP with a ``DistributedSampler``, the Dice of all processes' cases is gathered before electing,
            so every process elects the same teachers.
        inferer: e.g. ``SlidingWindowInferer``.
        modalities: modality names in channel order.
        loss: an ``LCKDLoss`` (anything with ``set_teachers``) to receive the teachers; optional.
        elect_epoch: epoch after which the first election runs (>= 1).
        reelect_every: epochs between later elections; 0 elects once.
        metadata_file: bundle metadata.json to update (by the first process only, under DDP); ``None`` skips the write.
        device: where to run the validation passes.
        resamples: bootstrap resamples for the win rate; 0 skips it.
        seed: of the bootstrap.
        to_labels: the path from output to label map (:class:`bundle.transforms.PredictionToLabelsd`), so that the
            election scores what inference would write; default: on the network's grid, no post-processing.
        convention: label values of the dataset.
        write_on_elect: write metadata.json at each election; ``False`` for ``elect.json``, which writes it only once
            the elected teachers are in ``model.pt`` (:meth:`model_saved`), so the two never disagree.
    """

    def __init__(
        self,
        network: nn.Module,
        data_loader: Iterable[dict],
        inferer: Callable,
        modalities: Sequence[str],
        loss: Any = None,
        elect_epoch: int = 1,
        reelect_every: int = 0,
        metadata_file: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        resamples: int = 1000,
        seed: int = 0,
        to_labels: Callable[[dict], Mapping] | None = None,
        convention: str = "brats2021",
        write_on_elect: bool = True,
    ) -> None:
        check_elect_epoch(elect_epoch)
        check_reelect_every(reelect_every)
        self.network = unwrap(network)
        self.data_loader = data_loader
        self.inferer = inferer
        self.modalities = check_modalities(modalities)
        self.loss = loss
        self.elect_epoch = int(elect_epoch)
        self.reelect_every = int(reelect_every)
        self.metadata_file = metadata_file
        self.device = device
        self.resamples = int(resamples)
        self.seed = seed
        self.to_labels = to_labels or PredictionToLabelsd("pred", transform=None, convention=convention)
        self.convention = convention
        self.write_on_elect = bool(write_on_elect)
        self.result: dict[str, Any] = {}
        self.model_election: dict[str, Any] = {}
        self._epoch: int | None = None

    @property
    def teachers(self) -> dict[str, str] | None:
        return self.result.get("teachers")

    def attach(self, engine: Engine) -> None:
        """Elect at the scheduled epochs; ``engine.state.teachers`` shows the current set (for StatsHandler)."""
        engine.add_event_handler(Events.STARTED, self._publish)
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: setattr(self, "_epoch", e.state.epoch))
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._due), self._on_epoch)

    def _publish(self, engine: Engine) -> None:
        engine.state.teachers = format_teachers(self.teachers)

    def _due(self, engine: Engine, epoch: int) -> bool:
        if epoch == self.elect_epoch:
            return True
        return (
            self.reelect_every > 0 and epoch > self.elect_epoch and (epoch - self.elect_epoch) % self.reelect_every == 0
        )

    def _on_epoch(self, engine: Engine) -> None:
        metrics = self.publish(engine, self.elect(epoch=engine.state.epoch))

        # the Dice table is a metric of the election epoch only
        def _withdraw(engine: Engine) -> None:
            for key in metrics:
                engine.state.metrics.pop(key, None)
            engine.remove_event_handler(_withdraw, Events.EPOCH_STARTED)

        engine.add_event_handler(Events.EPOCH_STARTED, _withdraw)

    def publish(self, engine: Engine, result: Mapping[str, Any]) -> dict[str, float]:
        """Show an election on ``engine.state`` for the logging handlers attached after this one.

        ``engine.state.teachers`` becomes the formatted teacher set and the single-modality Dice table
        is added to ``engine.state.metrics`` as ``election_dice_<region>_<modality>``, so StatsHandler,
        TensorBoard and MLflow record it as metrics of the current epoch.

        Args:
            engine: the engine whose state to update.
            result: an election result, as returned by :meth:`elect`.

        Returns:
            The metrics added.
        """
        self._publish(engine)
        metrics = {
            f"election_dice_{region}_{modality}": dice
            for region, scores in result["election_dice"].items()
            for modality, dice in scores.items()
            if dice is not None
        }
        engine.state.metrics.update(metrics)
        return metrics

    def single_modality_dice(self) -> torch.Tensor:
        """Validate the network once per single-modality mask: what an election compares, and what a federated
        site summarises (:func:`bundle.metrics.teacher_choice.site_election_summary`) instead of electing.

        Returns:
            ``(cases, N, R)`` Dice, regions in network order; NaN where a case lacks the region or the sequence.
        """
        single = torch.eye(len(self.modalities), dtype=torch.bool)
        return combination_dice(
            self.network,
            self.data_loader,
            self.inferer,
            single,
            self.to_labels,
            self.device,
            self.convention,
            ignore_empty=True,
        )

    def elect(self, epoch: int | None = None) -> dict[str, Any]:
        """Run the election now, apply and record it. Returns the result block (as in metadata.json)."""
        where = f"epoch {epoch}" if epoch is not None else "checkpoint"
        logger.info(f"teacher election at {where}: validating each single modality ...")
        dice = self.single_modality_dice()
        teachers, table = elect_teachers(dice, self.modalities, previous=self.teachers)
        undecided = undecided_regions(table)
        result: dict[str, Any] = {
            "modalities": list(self.modalities),
            "teachers": teachers,
            "undecided": undecided,
            "election_dice": table,
            "elected_at": {"epoch": epoch, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "cases": int(dice.shape[0]),
            "paired_cases": paired_cases(dice),
        }
        if self.resamples > 0:
            result["win_rate"] = bootstrap_win_rate(dice, self.modalities, self.resamples, self.seed)
        self.load_state_dict({**result, MODEL_ELECTION: self.model_election})
        if self.write_on_elect:
            self.write_metadata()
        logger.info(
            f"teacher election at {where} on {dice.shape[0]} validation cases (single-modality Dice):\n{format_election(result)}"
        )
        for region in undecided:
            logger.warning(
                f"{region} is undecided: none of the {dice.shape[0]} validation cases contains it, so no sequence can be "
                f"compared; {'it keeps its teacher ' + teachers[region] if region in teachers else 'it has no teacher yet'}. "
                "Validate on cases that contain it (a larger validation split) to elect one."
            )
        for region, count in result["paired_cases"].items():
            if count == 0 and region not in undecided:
                logger.warning(
                    f"{region}: no validation case has every sequence, so each sequence's Dice is its mean over the "
                    "cases that have it, not over the same cases; validate on cases with all sequences to compare them "
                    "fairly."
                )
        for region, rates in result.get("win_rate", {}).items():
            rate = rates[teachers[region]]
            if rate < LOW_WIN_RATE:
                logger.warning(
                    f"{region} teacher {teachers[region]} wins only {rate:.0%} of {self.resamples} bootstrap resamples of the "
                    f"validation cases: the choice is uncertain (win rates {rates}); more validation cases would settle it."
                )
        return result

    def model_saved(self, metadata: Mapping[str, Any] | None = None) -> None:
        """``models/model.pt`` has just been written with the weights in training: their teacher set is the election
        in force, which metadata.json now names as the model's (``metadata``: Ignite's save metadata, whose
        ``priority`` is the selection metric's value)."""
        self.model_election = {
            "modalities": list(self.modalities),
            "teachers": None,
            **self.result,
            "model": {"epoch": self._epoch},
        }
        score = (metadata or {}).get("priority")
        if isinstance(score, (int, float)) and metadata and metadata.get("score_name"):
            self.model_election["model"].update(metric=metadata["score_name"], value=round(float(score), 4))
        self.write_metadata()

    @property
    def model_teachers(self) -> dict[str, str] | None:
        """The teacher set of the weights in ``models/model.pt`` (the last election's until a model is written)."""
        return (self.model_election or self.result).get("teachers")

    def metadata_block(self) -> dict[str, Any]:
        """metadata.json's ``lckd`` block: the election of the weights in ``models/model.pt`` (the last election until
        a model is written), their preprocessing, the epoch that wrote them, and the last election under
        ``last_election`` when it is not theirs."""
        block = dict(self.model_election or self.result) or {"modalities": list(self.modalities), "teachers": None}
        block["preprocessing"] = getattr(unwrap(self.network), "record", {}).get("preprocessing")
        if self.model_election and self.result.get("elected_at") != self.model_election.get("elected_at"):
            block["last_election"] = dict(self.result)
        return block

    def write_metadata(self) -> None:
        """Write :meth:`metadata_block` into ``metadata_file`` (first process only, atomically)."""
        if self.metadata_file is not None and idist.get_rank() == 0:
            update_metadata(self.metadata_file, self.metadata_block())

    def state_dict(self) -> dict[str, Any]:
        """The election without its teacher set, which the checkpoint's weights carry in their record (one copy per
        file); the election of ``models/model.pt`` (other weights) keeps its own."""
        state = {key: value for key, value in self.result.items() if key != "teachers"}
        return {**state, MODEL_ELECTION: self.model_election} if self.model_election else state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore an election (e.g. from a checkpoint) and hand its teachers to the loss and the network's record.

        A checkpoint's election names no teachers (:meth:`state_dict`): they are the record of the weights loaded
        before it (the network comes first in the checkpoint, as in train.json's ``save_dict``). A state that names
        them (a checkpoint written before, or a federated server's election) is taken as it is.
        """
        state = dict(state)
        self.model_election = dict(state.pop(MODEL_ELECTION, None) or {})
        if state and "teachers" not in state:
            state["teachers"] = (getattr(unwrap(self.network), "record", None) or {}).get("teachers")
        if state and list(state.get("modalities", [])) != list(self.modalities):
            raise InputError(
                f"the stored election is for modalities {state.get('modalities')}, but this model has {list(self.modalities)}; "
                "use a checkpoint trained with the same modalities."
            )
        self.result = state
        if self.loss is not None:
            self.loss.set_teachers(state.get("teachers"))
        record_election(unwrap(self.network), state)  # the teacher set travels with the weights
