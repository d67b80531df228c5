"""The server of a federated LCKD run: NVIDIA FLARE's FedAvg plus the federated teacher election."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.fedavg import FedAvg

from bundle import BUNDLE_ROOT
from bundle.federated.protocol import (
    ELECT_META_KEY,
    ELECTION_META_KEY,
    SUMMARY_META_KEY,
    election_due,
    federated_election,
    network_weights,
)
from bundle.io import atomic_write
from bundle.metadata import read_metadata, update_metadata
from bundle.networks import LCKDNet, record_election
from bundle.reports.logs import format_election

__all__ = ["LCKDFedAvg", "bundle_network"]


def bundle_network(bundle_root: str | os.PathLike, configs: Sequence[str], seed: int | None = 0) -> LCKDNet:
    """The ``network_def`` of the bundle's merged ``configs`` (paths relative to ``bundle_root``), on the CPU.

    The server and every site build the network from the same config files, so the global weights fit each
    site's network; ``seed`` makes the initial weights reproducible.
    """
    parser = ConfigParser()
    parser.read_config([str(Path(bundle_root) / config) for config in configs])
    parser["bundle_root"] = str(bundle_root)
    if seed is not None:
        torch.manual_seed(seed)
    return parser.get_parsed_content("network_def")


class LCKDFedAvg(FedAvg):
    """FedAvg (weights averaged in proportion to each site's training iterations) with the LCKD teacher election
    done across sites, and a global model the bundle's inference.json loads.

    At the rounds :func:`~bundle.federated.protocol.election_due` names, every site validates the global
    model it receives with each single sequence and returns the summed Dice and case counts; the server
    combines them case-weighted (:func:`bundle.metrics.teacher_choice.combine_site_elections`; a site lacking a
    sequence adds nothing for it), elects per region and sends the teacher set with the next round's weights.
    After every round it writes ``ckpt_dir/model.pt`` (a plain ``state_dict`` whose record holds the federated
    teachers and their per-site case counts; otherwise as train.json writes it) and the election block, with
    the same counts, into ``metadata_file``.

    Args:
        configs: the bundle config files the sites train with (relative to ``bundle_root``): the server builds
            the same network from them for the initial weights and the global checkpoint.
        bundle_root: the bundle; default: the one this package belongs to.
        ckpt_dir: where the global ``model.pt`` goes; default ``<bundle_root>/models``.
        metadata_file: the metadata.json the election block goes into; default ``<bundle_root>/configs/metadata.json``.
        elect_round: rounds of training before the first election (>= 1).
        reelect_every: rounds between later elections; 0 elects once.
        seed: of the initial weights.
        args, kwargs: NVIDIA FLARE's ``FedAvg`` arguments (``num_clients``, ``num_rounds``, ...).
    """

    def __init__(
        self,
        *args: Any,
        configs: Sequence[str] = ("configs/train.json", "configs/federated.json"),
        bundle_root: str | None = None,
        ckpt_dir: str | None = None,
        metadata_file: str | None = None,
        elect_round: int = 1,
        reelect_every: int = 0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        election_due(0, elect_round, reelect_every)  # validates the schedule before the job starts
        self.configs = list(configs)
        self.bundle_root = Path(bundle_root or BUNDLE_ROOT).resolve()
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir else self.bundle_root / "models"
        self.metadata_file = Path(metadata_file) if metadata_file else self.bundle_root / "configs" / "metadata.json"
        self.elect_round = int(elect_round)
        self.reelect_every = int(reelect_every)
        self.seed = seed
        self.election: dict[str, Any] = {}
        self._summaries: dict[str, Mapping[str, Any]] = {}
        self._network: LCKDNet | None = None
        self.saved_round: int | None = None

    def _round_meta(self, round_index: int) -> dict[str, Any]:
        return {
            ELECTION_META_KEY: self.election,
            ELECT_META_KEY: election_due(round_index, self.elect_round, self.reelect_every),
        }

    def load_model(self) -> FLModel:
        """The initial global model: the bundle's network with ``seed``; checks the metadata file is writable."""
        read_metadata(self.metadata_file, writable=True)
        self._network = bundle_network(self.bundle_root, self.configs, self.seed)
        self.info(f"initial global model: {type(self._network).__name__} from {self.configs} in {self.bundle_root}")
        return FLModel(
            params_type=ParamsType.FULL,
            params={key: value.numpy() for key, value in network_weights(self._network.state_dict()).items()},
            meta=self._round_meta(self.start_round),
        )

    def _aggregate_one_result(self, result: FLModel) -> bool:
        summary = (result.meta or {}).get(SUMMARY_META_KEY)
        if summary is not None:
            self._summaries[(result.meta or {}).get("client_name", f"site{len(self._summaries) + 1}")] = summary
        return super()._aggregate_one_result(result)

    def update_model(self, model: FLModel, aggr_result: FLModel) -> FLModel:
        """The averaged weights, and a new teacher set when the sites summarised an election this round."""
        model = super().update_model(model, aggr_result)
        if self._summaries:
            self.election = federated_election(
                self._summaries, self._network.modalities, self.current_round, self.election.get("teachers")
            )
            self._summaries = {}
            self.info(
                f"federated teacher election on the global model of round {self.current_round} "
                f"(sites {self.election['federated']['sites']}, {self.election['cases']} validation cases):\n"
                f"{format_election(self.election)}"
            )
        model.meta = {**(model.meta or {}), **self._round_meta(self.current_round + 1)}
        return model

    def save_model(self, model: FLModel) -> None:
        """The global model of a round that every site returned: ``ckpt_dir/global_latest.pt`` (the run's progress)
        and, after the last round, ``ckpt_dir/model.pt`` with the federated teachers and per-site case counts in its
        record and the election in ``metadata_file``. A round some site did not return is not written, and a run that
        ends before its last round leaves the previous ``model.pt`` and ``metadata.json`` as they were (:meth:`run`
        says so)."""
        returned, expected = getattr(self, "_received_count", 0), getattr(self, "_expected_count", 0)
        if returned < expected:
            self.warning(
                f"round {self.current_round}: {returned} of {expected} sites returned a model; the global model of this "
                "round is not written."
            )
            return
        network = self._network
        network.load_state_dict(
            {key: torch.as_tensor(value) for key, value in model.params.items()}
            | {"_extra_state": network.state_dict()["_extra_state"]}
        )
        record_election(network, self.election)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        last = self.current_round == self.start_round + self.num_rounds - 1
        path = self.ckpt_dir / ("model.pt" if last else "global_latest.pt")
        atomic_write(path, lambda file: torch.save(network.state_dict(), file))
        self.saved_round = self.current_round
        if last:
            (self.ckpt_dir / "global_latest.pt").unlink(missing_ok=True)
            block = {"modalities": list(network.modalities), "teachers": None, **self.election}
            update_metadata(self.metadata_file, {**block, "preprocessing": network.record["preprocessing"]})
        self.info(f"global model of round {self.current_round} saved to {path}")

    def run(self) -> None:
        """FedAvg's rounds; a run that ends before its last round is saved says so, in one line."""
        self.saved_round = None
        super().run()
        final = self.start_round + self.num_rounds - 1
        if self.saved_round != final:
            self.error(
                f"the federated run ended short: the global model of round {final} was never written (last written: "
                f"{'none' if self.saved_round is None else f'round {self.saved_round}, in global_latest.pt'}); "
                f"{self.ckpt_dir / 'model.pt'} and {self.metadata_file} are left as they were. See each site's log for "
                "the failure, then run the job again."
            )
