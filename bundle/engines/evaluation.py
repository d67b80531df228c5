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
from bundle.metrics.combinations import case_combination_metrics
from bundle.reports.tables import AVERAGE, format_summary_markdown, summarize_combinations, write_combination_reports

__all__ = ["CombinationEvaluator"]

logger = logging.getLogger(__name__)


class CombinationEvaluator(Engine):
    """Ignite engine that evaluates every case under each of the ``2**N - 1`` modality combinations.

    One iteration is one case: Dice (and HD95) per region for every combination, in the fixed order of
    :func:`bundle.conventions.modality_combinations`. On completion it publishes ``output_dir/report/``:
    ``combinations.csv`` (one row per case x combination), ``summary.csv`` and ``summary.md`` (mean and
    std per combination and region, and the average over the combinations, as the LCKD paper reports)
    and ``combinations.png`` (a Dice heatmap), the four replaced together (:func:`write_combination_reports`). Handlers (e.g. MONAI's
    ``StatsHandler``) attach to it like to any Ignite engine.

    Args:
        network: the trained network.
        data_loader: ``batch_size=1`` loader of ``image``, ``label``, ``mask`` (and ``case``) dicts.
        inferer: e.g. ``SlidingWindowInferer``.
        modalities: modality names in channel order.
        output_dir: folder for the reports (created).
        device: where to run.
        hd95_spacing: voxel spacing in mm for HD95; ``None`` skips HD95.
        val_handlers: Ignite/MONAI handlers to attach (named as in MONAI's evaluators).
        amp: run the network in mixed precision (``torch.autocast``; for GPUs).
        lesion_wise: also the BraTS 2023+ lesion-wise Dice and HD95 (needs ``hd95_spacing``).
        split: name of the data split evaluated, written above every table (e.g. ``"test"``).
        postprocess: applied to each binary region prediction before scoring (e.g.
            :func:`bundle.transforms.region_postprocessing`); ``None`` scores the thresholded output.
    """

    def __init__(
        self,
        network: nn.Module,
        data_loader: Iterable[dict],
        inferer: Callable,
        modalities: Sequence[str],
        output_dir: str | os.PathLike,
        device: torch.device | str = "cpu",
        hd95_spacing: Sequence[float] | None = (1.0, 1.0, 1.0),
        val_handlers: Sequence[Any] | None = None,
        amp: bool = False,
        lesion_wise: bool = True,
        split: str = "unnamed split",
        postprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(self._iteration)
        self.network = network
        self.data_loader = data_loader
        self.inferer = inferer
        self.modalities = check_modalities(modalities)
        self.combinations = modality_combinations(self.modalities)
        self.masks = combination_masks(self.modalities)
        self.output_dir = Path(output_dir)
        self.device = device
        self.hd95_spacing = hd95_spacing
        self.amp = bool(amp)
        self.lesion_wise = bool(lesion_wise) and hd95_spacing is not None
        self.split = split
        self.postprocess = postprocess
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

    def _iteration(self, engine: Engine, batch: dict) -> dict[str, torch.Tensor]:
        metrics = case_combination_metrics(
            self.network,
            batch,
            self.inferer,
            self.masks,
            self.device,
            hd95_spacing=self.hd95_spacing,
            amp=self.amp,
            lesion_wise=self.lesion_wise,
            postprocess=self.postprocess,
        )
        case = case_name(batch, default=f"case_{engine.state.iteration:04d}")
        for index, combination in enumerate(self.combinations):
            row: dict[str, Any] = {
                "case": case,
                "combination": combination_name(combination),
                "n_modalities": len(combination),
                "split": self.split,
            }
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
        self.report_paths = write_combination_reports(self.rows, self.summary, self.output_dir, self.split)
        for entry in self.summary:
            name = "average" if entry["combination"] == AVERAGE else entry["combination"].replace("+", "_")
            for region in REPORT_REGIONS:
                value = entry[f"dice_{region}_mean"]
                if not math.isnan(value):
                    engine.state.metrics[f"dice_{region}_{name}"] = value
        for handler in self.val_handlers:
            if isinstance(handler, MLFlowHandler):
                handler.artifacts = (*handler.artifacts, *(str(p) for p in self.report_paths.values()))
        logger.info(
            f"per modality combination, mean ± std over cases:\n{format_summary_markdown(self.summary, self.split)}"
        )
        logger.info("reports: " + ", ".join(str(p) for p in self.report_paths.values()))
