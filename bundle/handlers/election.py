"""Teacher election of LCKD: per region, the modality whose single-modality Dice is best."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn

from bundle.conventions import NETWORK_REGIONS, REPORT_REGIONS, check_modalities, check_teachers
from bundle.distributed import unwrap
from bundle.errors import InputError, InputFileError
from bundle.handlers.combinations import combination_dice
from bundle.handlers.report import format_teachers
from bundle.io import atomic_write_json, read_json

__all__ = [
    "elect_teachers",
    "undecided_regions",
    "bootstrap_win_rate",
    "read_metadata",
    "update_metadata",
    "read_teachers",
    "format_election",
    "ElectionHandler",
    "ElectionEngine",
]

logger = logging.getLogger(__name__)

LOW_WIN_RATE = 0.7
"""Below this bootstrap win rate the elected teacher is reported as uncertain."""


def _argmax_first(scores: Sequence[float]) -> int:
    """Index of the highest score, the first one on ties; NaN never wins."""
    best = 0
    for index, score in enumerate(scores):
        if not math.isnan(score) and (math.isnan(scores[best]) or score > scores[best]):
            best = index
    return best


def elect_teachers(
    dice: torch.Tensor, modalities: Sequence[str], previous: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, dict[str, float | None]]]:
    """Elect, per region, the modality with the best mean single-modality Dice.

    A region that no case contains (every score NaN) cannot be decided: it keeps its ``previous``
    teacher, or has none before the first election (the region is then absent from the teacher set).

    Args:
        dice: ``(cases, N, R)`` Dice of each case with only modality ``n`` present, regions in
            network order (TC, WT, ET); NaN entries are skipped.
        modalities: the N modality names, in canonical order (ties go to the earlier one).
        previous: the teacher set in force, region -> modality; kept for undecided regions.

    Returns:
        ``(teachers, table)``: region -> modality, and region -> {modality: mean Dice or None}, in report
        order (ET, TC, WT). :func:`undecided_regions` of the table names the regions not decided.

    Example:
        >>> dice = torch.tensor([[[0.1, 0.9, 0.2], [0.8, 0.3, 0.7]]])  # 1 case, 2 modalities
        >>> elect_teachers(dice, ["flair", "t1ce"])[0]
        {'ET': 't1ce', 'TC': 't1ce', 'WT': 'flair'}
    """
    modalities = check_modalities(modalities)
    if dice.dim() != 3 or dice.shape[1] != len(modalities) or dice.shape[2] != len(NETWORK_REGIONS):
        raise InputError(
            f"dice must be (cases, {len(modalities)} modalities, {len(NETWORK_REGIONS)} regions), got {list(dice.shape)}."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a region no case holds: all-NaN mean
        mean = torch.nanmean(dice.double(), dim=0)  # (N, R)
    teachers, table = {}, {}
    for region in REPORT_REGIONS:
        scores = mean[:, NETWORK_REGIONS.index(region)].tolist()
        table[region] = {m: round(s, 4) if not math.isnan(s) else None for m, s in zip(modalities, scores)}
        if all(math.isnan(score) for score in scores):
            if previous and region in previous:
                teachers[region] = previous[region]
            continue
        teachers[region] = modalities[_argmax_first(scores)]
    return teachers, table


def undecided_regions(table: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """Regions of an election table without any score: no validation case contains them."""
    return [region for region, scores in table.items() if all(score is None for score in scores.values())]


def bootstrap_win_rate(
    dice: torch.Tensor, modalities: Sequence[str], resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """How often each modality wins the election when the cases are resampled with replacement.

    Args:
        dice: ``(cases, N, R)`` as for :func:`elect_teachers`.
        modalities: the N modality names.
        resamples: number of bootstrap resamples.
        seed: of the resampling, so the figure is reproducible.

    Returns:
        region -> {modality: fraction of resamples it wins}, in report order; regions no case holds are left out.
    """
    modalities = check_modalities(modalities)
    values = dice.double().numpy()
    cases = values.shape[0]
    picks = np.random.default_rng(seed).integers(0, cases, size=(resamples, cases))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample may hold no case with a modality
        means = np.nanmean(values[picks], axis=1)  # (resamples, N, R)
    rates = {}
    for region in REPORT_REGIONS:
        column = means[:, :, NETWORK_REGIONS.index(region)]
        if np.isnan(column).all():
            continue  # no case holds the region: nothing to resample
        wins = np.bincount([_argmax_first(row.tolist()) for row in column], minlength=len(modalities))
        rates[region] = {m: round(float(w) / resamples, 4) for m, w in zip(modalities, wins)}
    return rates


def read_metadata(metadata_file: str | os.PathLike, writable: bool = False) -> dict[str, Any]:
    """A bundle's metadata.json, checked to be a JSON object (and, with ``writable``, one the election can update).

    Raises:
        InputError: naming the file, what is wrong and the fix.
    """
    try:
        metadata = read_json(metadata_file)
    except InputFileError:
        raise InputFileError(
            f"{metadata_file} does not exist; restore the bundle's configs/metadata.json (git checkout "
            "configs/metadata.json) or point --metadata_file at a copy of it."
        ) from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("lckd", {}), dict):
        raise InputError(
            f'{metadata_file} must be a JSON object (a bundle\'s metadata, with an optional "lckd" object), got '
            f"{json.dumps(metadata)[:60]}; restore it from the bundle (git checkout configs/metadata.json)."
        )
    if writable and not (os.access(metadata_file, os.W_OK) and os.access(Path(metadata_file).parent, os.W_OK)):
        raise InputError(
            f"{metadata_file} is read-only, but the teacher election writes the teacher set into it; make it and "
            "its folder writable, or point --metadata_file at a writable copy."
        )
    return metadata


def update_metadata(metadata_file: str | os.PathLike, block: Mapping[str, Any], key: str = "lckd") -> None:
    """Set ``metadata[key] = block`` in a bundle's metadata.json atomically, keeping every other key."""
    metadata = read_metadata(metadata_file)
    metadata[key] = dict(block)
    atomic_write_json(metadata_file, metadata)


def read_teachers(
    metadata_file: str | os.PathLike, modalities: Sequence[str], key: str = "lckd"
) -> dict[str, str] | None:
    """The teacher set recorded in a bundle's metadata.json, checked against the model's modalities.

    Returns:
        region -> modality, or ``None`` when no election has been recorded yet.

    Raises:
        InputError: when the recorded teachers name a region or a modality this model does not have.
    """
    teachers = read_metadata(metadata_file).get(key, {}).get("teachers")
    if teachers is None:
        return None
    try:
        return check_teachers(teachers, modalities)
    except InputError as error:
        raise InputError(
            f"{metadata_file} records {error} The metadata belongs to another model. Re-elect "
            "(python -m monai.bundle run --config_file \"['configs/train.json','configs/elect.json']\") or remove "
            'its "lckd" block.'
        ) from None


def format_election(result: Mapping[str, Any]) -> str:
    """A table of the single-modality Dice, the teachers and their win rates; undecided regions say so."""
    modalities = result["modalities"]
    width = max(7, *(len(m) + 2 for m in modalities))
    lines = ["region" + "".join(f"{m:>{width}}" for m in modalities) + "   teacher  win rate"]
    undecided = result.get("undecided", [])
    for region in REPORT_REGIONS:
        scores = result["election_dice"][region]
        cells = "".join(f"{'n/a' if scores[m] is None else f'{scores[m]:.3f}':>{width}}" for m in modalities)
        teacher = result["teachers"].get(region)
        rate = result.get("win_rate", {}).get(region, {}).get(teacher)
        if region in undecided:
            verdict = f"undecided (no case holds {region}; {'kept ' + teacher if teacher else 'no teacher'})"
        else:
            verdict = f"{teacher:<8} {'' if rate is None else f'{rate:.2f}'}"
        lines.append(f"{region:<6}{cells}   {verdict}")
    return "\n".join(lines)


class ElectionHandler:
    """Ignite handler: elect per-region teachers on the validation split and switch on CKD.

    At the end of epoch ``elect_epoch`` (after a warm-up without distillation) and then every
    ``reelect_every`` epochs, the network is validated once per single-modality mask; per region the
    modality with the best mean Dice becomes the teacher (ties go to the earlier modality). The
    teacher set is given to the loss, written atomically into ``metadata_file`` under ``"lckd"`` and
    kept in :meth:`state_dict`, so checkpoints carry it and a resumed run needs no new election.
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
    ) -> None:
        if elect_epoch < 1:
            raise InputError(
                f"elect_epoch must be >= 1 (epochs of warm-up before the first election), got {elect_epoch}."
            )
        if reelect_every < 0:
            raise InputError(f"reelect_every must be >= 0 (0 = elect once), got {reelect_every}.")
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
        self.result: dict[str, Any] = {}

    @property
    def teachers(self) -> dict[str, str] | None:
        return self.result.get("teachers")

    def attach(self, engine: Engine) -> None:
        """Elect at the scheduled epochs; ``engine.state.teachers`` shows the current set (for StatsHandler)."""
        engine.add_event_handler(Events.STARTED, self._check_schedule)
        engine.add_event_handler(Events.STARTED, self._publish)
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._due), self._on_epoch)

    def _publish(self, engine: Engine) -> None:
        engine.state.teachers = format_teachers(self.teachers)

    def _check_schedule(self, engine: Engine) -> None:
        if engine.state.max_epochs is not None and self.elect_epoch > engine.state.max_epochs:
            raise InputError(
                f"elect_epoch={self.elect_epoch} is after the last epoch (max_epochs={engine.state.max_epochs}): "
                "no teacher would be elected and distillation would never run. Lower elect_epoch or raise max_epochs."
            )

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

    def elect(self, epoch: int | None = None) -> dict[str, Any]:
        """Run the election now, apply and record it. Returns the result block (as in metadata.json)."""
        where = f"epoch {epoch}" if epoch is not None else "checkpoint"
        logger.info(f"teacher election at {where}: validating each single modality ...")
        single = torch.eye(len(self.modalities), dtype=torch.bool)
        dice = combination_dice(self.network, self.data_loader, self.inferer, single, self.device, ignore_empty=True)
        teachers, table = elect_teachers(dice, self.modalities, previous=self.teachers)
        undecided = undecided_regions(table)
        result: dict[str, Any] = {
            "modalities": list(self.modalities),
            "teachers": teachers,
            "undecided": undecided,
            "election_dice": table,
            "elected_at": {"epoch": epoch, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "cases": int(dice.shape[0]),
        }
        if self.resamples > 0:
            result["win_rate"] = bootstrap_win_rate(dice, self.modalities, self.resamples, self.seed)
        self.load_state_dict(result)
        if self.metadata_file is not None and idist.get_rank() == 0:
            update_metadata(self.metadata_file, result)
        logger.info(
            f"teacher election at {where} on {dice.shape[0]} validation cases (single-modality Dice):\n{format_election(result)}"
        )
        for region in undecided:
            logger.warning(
                f"{region} is undecided: none of the {dice.shape[0]} validation cases contains it, so no sequence can be "
                f"compared; {'it keeps its teacher ' + teachers[region] if region in teachers else 'it has no teacher yet'}. "
                "Validate on cases that contain it (a larger validation split) to elect one."
            )
        for region, rates in result.get("win_rate", {}).items():
            rate = rates[teachers[region]]
            if rate < LOW_WIN_RATE:
                logger.warning(
                    f"{region} teacher {teachers[region]} wins only {rate:.0%} of {self.resamples} bootstrap resamples of the "
                    f"validation cases: the choice is uncertain (win rates {rates}); more validation cases would settle it."
                )
        return result

    def state_dict(self) -> dict[str, Any]:
        return dict(self.result)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore an election (e.g. from a checkpoint) and hand its teachers to the loss and the network's record."""
        state = dict(state)
        if state and list(state.get("modalities", [])) != list(self.modalities):
            raise InputError(
                f"the stored election is for modalities {state.get('modalities')}, but this model has {list(self.modalities)}; "
                "use a checkpoint trained with the same modalities."
            )
        self.result = state
        if self.loss is not None:
            self.loss.set_teachers(state.get("teachers"))
        record = getattr(unwrap(self.network), "record", None)
        if record is not None:  # the teacher set travels with the weights (LCKDNet's record)
            record["teachers"] = state.get("teachers")


class ElectionEngine(Engine):
    """One election as an Ignite engine: a single iteration that elects and publishes the result.

    ``elect.json`` runs it on a trained model; handlers (TensorBoard, MLflow) attach as to any engine
    and see ``engine.state.metrics`` (the single-modality Dice table) and ``engine.state.teachers``.

    Args:
        elector: the :class:`ElectionHandler` holding the network, the validation loader and the schedule.
        handlers: Ignite/MONAI handlers to attach, in order.
    """

    def __init__(self, elector: ElectionHandler, handlers: Sequence[Any] = ()) -> None:
        super().__init__(lambda engine, batch: elector.publish(engine, elector.elect()))
        self.elector = elector
        for handler in handlers:
            handler.attach(self)

    def run(self, data: Iterable | None = None, max_epochs: int = 1, **kwargs: Any) -> Any:  # type: ignore[override]
        """Elect once."""
        return super().run([None] if data is None else data, max_epochs=max_epochs, **kwargs)
