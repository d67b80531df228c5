"""A site of a federated LCKD run: the bundle's train.json on the site's own data, driven by MONAI's ``MonaiAlgo``
and connected to the server through NVIDIA FLARE's Client API.

Why the Client API and not MONAI's ``ClientAlgoExecutor``: that executor lives in ``monai-nvflare``, which
requires ``nvflare~=2.7``, and its exchange object has no place for the election summary; the Client API
(current ``nvflare``) carries it in the model's ``meta``. The training itself is still ``MonaiAlgo`` running
the bundle's configs: one local run of ``local_epochs`` epochs per round, its epoch count (and so the
warm-up and modality-dropping schedule) continuing across rounds.

Run by the job (``jobs/lckd_fedavg``); each site reads ``<dataset_root>/<site name>`` and writes its local
checkpoints and logs under its working folder.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.fl.client import MonaiAlgo
from monai.fl.utils.constants import ExtraItems, FlStatistics
from monai.fl.utils.exchange_object import ExchangeObject
from monai.networks.utils import copy_model_state

from bundle import BUNDLE_ROOT
from bundle.errors import InputError
from bundle.federated.protocol import ELECT_META_KEY, ELECTION_META_KEY, SUMMARY_META_KEY, network_weights
from bundle.metrics.teacher_choice import site_election_summary

__all__ = ["LCKDSite", "main"]

DEFAULT_CONFIGS = ("configs/train.json", "configs/federated.json")


class LCKDSite:
    """One site's training: ``MonaiAlgo`` over the bundle's configs, plus the site's part of the election.

    Args:
        site_name: the site (NVIDIA FLARE client) name.
        dataset_dir: the site's own dataset folder.
        workdir: where the site's local checkpoints (``models/``) and logs (``eval/``) go.
        configs: bundle config files, relative to ``bundle_root``, merged in order (the server builds its
            network from the same list).
        local_epochs: epochs per round.
        total_epochs: epochs of the whole run (rounds x ``local_epochs``): the learning-rate schedule's length.
        bundle_root: the bundle; default: the one this package belongs to.
        overrides: further config keys, e.g. ``{"warmup_epochs": 2}``.
    """

    def __init__(
        self,
        site_name: str,
        dataset_dir: str | os.PathLike,
        workdir: str | os.PathLike,
        configs: Sequence[str] = DEFAULT_CONFIGS,
        local_epochs: int = 1,
        total_epochs: int = 1,
        bundle_root: str | os.PathLike | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        if not Path(dataset_dir).is_dir():
            raise InputError(
                f"site {site_name}: its dataset folder {dataset_dir} does not exist; give each site a folder named "
                "after it under --dataset_root (e.g. data/sites/site-1)."
            )
        workdir = Path(workdir).resolve()
        bundle_root = str(Path(bundle_root or BUNDLE_ROOT).resolve())
        self.site_name = site_name
        self.algo = MonaiAlgo(
            bundle_root=bundle_root,
            local_epochs=local_epochs,
            send_weight_diff=False,
            config_train_filename=list(configs),
            train_kwargs={
                "bundle_root": bundle_root,
                "dataset_dir": str(Path(dataset_dir).resolve()),
                "ckpt_dir": str(workdir / "models"),
                "output_dir": str(workdir / "eval"),
                "lr_schedule_epochs": int(total_epochs),
                **dict(overrides or {}),
            },
            config_evaluate_filename=None,
        )
        self.algo.initialize({ExtraItems.CLIENT_NAME: site_name})
        parser = self.algo.train_workflow.parser
        self.elector = parser.get_parsed_content("train::elector")
        self.min_cases = int(parser.get_parsed_content("min_site_cases"))

    def train_round(self, weights: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[dict, dict[str, Any]]:
        """One round: take the server's teachers, summarise an election if asked, train, return the weights.

        Args:
            weights: the global weights.
            meta: the server's round meta (:data:`~bundle.federated.protocol.ELECTION_META_KEY`,
                :data:`~bundle.federated.protocol.ELECT_META_KEY`).

        Returns:
            ``(weights, meta)``: the trained weights (without the record) and the meta for the server: the
            iterations trained (FedAvg's weight) and, on an election round, the site's election summary.
        """
        weights = {key: torch.as_tensor(value) for key, value in weights.items()}
        if meta.get(ELECTION_META_KEY):
            self.elector.load_state_dict(meta[ELECTION_META_KEY])
        reply: dict[str, Any] = {}
        if meta.get(ELECT_META_KEY):
            copy_model_state(src=weights, dst=self.elector.network)
            reply[SUMMARY_META_KEY] = site_election_summary(self.elector.single_modality_dice(), self.min_cases)
        self.algo.train(ExchangeObject(weights=weights))
        trained = self.algo.get_weights()
        reply["NUM_STEPS_CURRENT_ROUND"] = int(trained.statistics[FlStatistics.NUM_EXECUTED_ITERATIONS])
        return network_weights(trained.weights), reply

    def finalize(self) -> None:
        self.algo.finalize()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset_root",
        default="data/sites",
        help="holds one dataset folder per site, named after it; relative to the bundle",
    )
    parser.add_argument(
        "--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="bundle config files, merged in order"
    )
    parser.add_argument("--local_epochs", type=int, default=1)
    parser.add_argument(
        "--num_rounds", type=int, required=True, help="the job's rounds (the learning-rate schedule spans them)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of this site (sites of a simulation share the CPU)"
    )
    parser.add_argument("--bundle_root", default=None, help="default: the bundle this package belongs to")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """The site's loop under NVIDIA FLARE's Client API (the job's client script calls it)."""
    import nvflare.client as flare
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    flare.init()
    site_name = flare.get_site_name()
    bundle_root = Path(args.bundle_root or BUNDLE_ROOT).resolve()
    site = LCKDSite(
        site_name,
        dataset_dir=bundle_root / args.dataset_root / site_name,
        workdir=Path.cwd(),
        configs=args.configs,
        local_epochs=args.local_epochs,
        total_epochs=args.num_rounds * args.local_epochs,
        bundle_root=bundle_root,
    )
    try:
        while flare.is_running():
            model = flare.receive()
            if model is None:
                break
            weights, meta = site.train_round(model.params, model.meta or {})
            flare.send(FLModel(params=weights, params_type=ParamsType.FULL, meta=meta))
    finally:
        site.finalize()


if __name__ == "__main__":
    main()
