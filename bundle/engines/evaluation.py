"""The 15-combination evaluation as an Ignite engine."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler
from torch import nn

from bundle.conventions import (
    NETWORK_REGIONS,
    REPORT_REGIONS,
    case_name,
    check_modalities,
    combination_masks,
    combination_name,
    modality_combinations,
)
from bundle.errors import InputError
from bundle.flags import flag
from bundle.metadata import EXPECTED_DICE_KEY, update_metadata
from bundle.metrics.combinations import case_combination_metrics
from bundle.metrics.scoring import check_rules
from bundle.networks.model_file import model_sha256
from bundle.reports.tables import AVERAGE, format_summary_markdown, summarize_combinations, write_combination_reports

__all__ = ["CombinationEvaluator"]

logger = logging.getLogger(__name__)


def _rounded(value: float) -> float | None:
    """4 decimals; ``None`` (JSON null) for NaN: no case scored, or one case's std."""
    return None if math.isnan(value) else round(value, 4)


class CombinationEvaluator(Engine):
    """Ignite engine that evaluates every case under each of the ``2**N - 1`` modality combinations.

    One iteration is one case: each combination's prediction becomes the label map inference would write
    (``to_labels``, on the grid the case was read on), which is scored against the case's label file under a named
    BraTS rule set (:func:`bundle.metrics.scoring.score_label_maps`), in the fixed order of
    :func:`bundle.conventions.modality_combinations`. On completion it publishes ``output_dir/report/``:
    ``combinations.csv`` (one row per case x combination), ``summary.csv`` and ``summary.md`` (mean and
    std per combination and region, and the average over the combinations, as the LCKD paper reports, per case
    group too when the dataset has groups such as HGG/LGG) and ``combinations.png`` (a Dice heatmap), the four
    replaced together (:func:`write_combination_reports`), each naming the split, the rule set and, for a split
    that elected the teachers or selected the model, that its numbers are optimistic. Handlers (e.g. MONAI's
    ``StatsHandler``) attach to it like to any Ignite engine.

    Args:
        network: the trained network.
        data_loader: ``batch_size=1`` loader of ``image`` (preprocessed), ``label`` (as read), ``mask`` (and
            ``case``, ``group``) dicts.
        inferer: e.g. :class:`bundle.networks.CaseMaskInferer`.
        modalities: modality names in channel order.
        output_dir: folder for the reports (created).
        to_labels: the path from output to label map (:class:`bundle.transforms.PredictionToLabelsd`).
        convention: label values of the dataset (and of the label maps ``to_labels`` makes).
        scoring: rule set, a key of :data:`bundle.metrics.scoring.SCORING_RULES`.
        device: where to run.
        hd95: also the distance metrics (``hd95``, ``amp`` and ``lesion_wise`` are read with
            :func:`bundle.flags.flag`: the command line's ``"false"`` is false).
        val_handlers: Ignite/MONAI handlers to attach (named as in MONAI's evaluators).
        amp: run the network in mixed precision (``torch.autocast``; for GPUs).
        lesion_wise: also the rule set's lesion-wise metrics.
        split: name of the data split evaluated, written above every table (e.g. ``"test"``).
        optimistic: why the split's numbers are optimistic (it elected the teachers, selected the model, or was
            trained on), ``None`` for a held-out split; logged as a warning and written into every report's title.
        metadata_file: with ``model_file``, the bundle's metadata.json, into which the Dice table per combination
            (mean and std over cases per region) is written under :data:`bundle.metadata.EXPECTED_DICE_KEY` with the
            model's SHA-256, so that the model can advise which sequence to acquire (:mod:`bundle.clinical.report`).
        model_file: the weights evaluated (their SHA-256 ties the table to them).
    """

    def __init__(
        self,
        network: nn.Module,
        data_loader: Iterable[dict],
        inferer: Callable,
        modalities: Sequence[str],
        output_dir: str | os.PathLike,
        to_labels: Callable[[dict], Any],
        convention: str = "brats2021",
        scoring: str = "brats2025",
        device: torch.device | str = "cpu",
        hd95: bool | str = True,
        val_handlers: Sequence[Any] | None = None,
        amp: bool | str = False,
        lesion_wise: bool | str = True,
        split: str = "unnamed split",
        optimistic: str | None = None,
        metadata_file: str | os.PathLike | None = None,
        model_file: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(self._iteration)
        self.network = network
        self.data_loader = data_loader
        self.inferer = inferer
        self.modalities = check_modalities(modalities)
        self.combinations = modality_combinations(self.modalities)
        self.masks = combination_masks(self.modalities)
        self.output_dir = Path(output_dir)
        self.to_labels = to_labels
        self.convention = convention
        self.scoring = check_rules(scoring)
        self.device = device
        self.hd95 = flag(hd95, "hd95")
        self.amp = flag(amp, "amp")
        self.lesion_wise = flag(lesion_wise, "lesion_wise")
        self.split = split
        self.optimistic = optimistic
        self.metadata_file = metadata_file
        self.model_file = model_file
        self.rows: list[dict[str, Any]] = []
        self.summary: list[dict[str, Any]] = []
        self.report_paths: dict[str, Path] = {}
        self.val_handlers = list(val_handlers or ())
        self.add_event_handler(Events.STARTED, self._start)
        # before the handlers' own EPOCH_COMPLETED logging, so they see the summary metrics
        self.add_event_handler(Events.EPOCH_COMPLETED, self._finish)
        for handler in self.val_handlers:
            handler.attach(self)

    def run(self, data: Iterable | None = None, max_epochs: int = 1, **kwargs) -> Any:  # type: ignore[override]
        """Evaluate every case of ``data`` (default: the ``data_loader`` given) once."""
        return super().run(self.data_loader if data is None else data, max_epochs=max_epochs, **kwargs)

    def _start(self, engine: Engine) -> None:
        self.network.eval()
        self.rows = []
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.optimistic:
            logger.warning(
                f"the {self.split} split {self.optimistic}: its scores are optimistic, not held-out. Keep test cases "
                "apart (test_fraction, or a split file's test list) for numbers to report."
            )

    def _iteration(self, engine: Engine, batch: dict) -> dict[str, torch.Tensor]:
        metrics = case_combination_metrics(
            self.network,
            batch,
            self.inferer,
            self.masks,
            self.to_labels,
            self.device,
            self.convention,
            self.scoring,
            lesion_wise=self.lesion_wise,
            hd95=self.hd95,
            amp=self.amp,
        )
        case = case_name(batch, default=f"case_{engine.state.iteration:04d}")
        group = batch.get("group")
        group = group[0] if isinstance(group, (list, tuple)) else group
        for index, combination in enumerate(self.combinations):
            row: dict[str, Any] = {
                "case": case,
                "combination": combination_name(combination),
                "n_modalities": len(combination),
                "split": self.split,
            }
            if group:
                row["group"] = str(group)
            for name, values in metrics.items():
                for region in REPORT_REGIONS:
                    row[f"{name}_{region}"] = float(values[index, NETWORK_REGIONS.index(region)])
            self.rows.append(row)
        total = len(self.data_loader) if hasattr(self.data_loader, "__len__") else "?"
        logger.info(
            f"case {engine.state.iteration}/{total} {case}: mean Dice over {len(self.combinations)} combinations {float(torch.nanmean(metrics['dice'])):.3f}"
        )
        return metrics

    def _finish(self, engine: Engine) -> None:
        self.summary = summarize_combinations(self.rows, self.modalities)
        self.report_paths = write_combination_reports(
            self.rows, self.summary, self.output_dir, self.split, self.scoring, self.optimistic
        )
        for entry in self.summary:
            label = entry["combination"]
            name = ("average" + label[len(AVERAGE) :].replace(", ", "_")) if label.startswith(AVERAGE) else label
            name = name.replace("+", "_")
            for region in REPORT_REGIONS:
                value = entry[f"dice_{region}_mean"]
                if not math.isnan(value):
                    engine.state.metrics[f"dice_{region}_{name}"] = value
        for handler in self.val_handlers:
            if isinstance(handler, MLFlowHandler):
                handler.artifacts = (*handler.artifacts, *(str(p) for p in self.report_paths.values()))
        logger.info(
            "per modality combination, mean ± std over cases:\n"
            + format_summary_markdown(self.summary, self.split, self.scoring, self.optimistic)
        )
        logger.info("reports: " + ", ".join(str(p) for p in self.report_paths.values()))
        if self.metadata_file is not None and self.model_file is not None:
            self._record_table()

    def _record_table(self) -> None:
        """The Dice table per combination into metadata.json, tied to the model's SHA-256; a failure only warns."""

        block = {
            "model_sha256": model_sha256(self.model_file),
            "split": self.split,
            "cases": len({row["case"] for row in self.rows}),
            "scoring": self.scoring,
            "optimistic": self.optimistic,
            "dice": {
                entry["combination"]: {
                    region: [_rounded(entry[f"dice_{region}_mean"]), _rounded(entry[f"dice_{region}_std"])]
                    for region in REPORT_REGIONS
                }
                for entry in self.summary
                if not entry["combination"].startswith(AVERAGE)
            },
        }
        try:
            update_metadata(self.metadata_file, block, key=EXPECTED_DICE_KEY)
        except (OSError, InputError) as error:
            logger.warning(f"the Dice table was not written into {self.metadata_file} ({error}); the report has it.")
            return
        logger.info(
            f"Dice per combination of {self.model_file} written into {self.metadata_file} ({EXPECTED_DICE_KEY})"
        )
