"""Federated LCKD (bundle/federated, jobs/lckd_fedavg): the election protocol, the job folder, and a short
``nvflare simulator`` run of two sites, one of which never acquires T1ce, whose global model inference.json loads."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pytest
import torch
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.fedavg import FedAvg
from parameterized import parameterized

from bundle.data import check_dataset, load_datalist, make_dataset
from bundle.errors import InputError
from bundle.federated import election_due, federated_election, network_weights
from bundle.federated.controller import LCKDFedAvg
from bundle.federated.job import JOB_DIR, configure_job, job_settings
from bundle.federated.site import LCKDSite
from bundle.metrics.teacher_choice import site_election_summary
from bundle.networks import LCKDNet, read_record
from tests.helpers import (
    BUNDLE_ROOT,
    NETWORK_KEYS,
    SUBPROCESS_ENV,
    TINY_NETWORK,
    TINY_OVERRIDES,
    fresh_metadata,
    run_command,
    run_inference,
)

MODALITIES = ["flair", "t1", "t1ce", "t2"]
NAN = float("nan")


def _site_dice(cases: int, t1ce_present: bool, best: int) -> torch.Tensor:
    """(cases, 4, 3) single-modality Dice where modality ``best`` scores 0.9 in every region, the others 0.5."""
    dice = torch.full((cases, 4, 3), 0.5)
    dice[:, best] = 0.9
    if not t1ce_present:
        dice[:, 2] = NAN
    return dice


class TestElectionSchedule(unittest.TestCase):
    @parameterized.expand([("once", 2, 0, [2]), ("every_round", 1, 1, [1, 2, 3, 4, 5]), ("every_third", 1, 3, [1, 4])])
    def test_rounds(self, _, elect_round, reelect_every, expected):
        self.assertEqual([r for r in range(6) if election_due(r, elect_round, reelect_every)], expected)

    @parameterized.expand([("no_warm_up", 0, 0, "elect_round must be >= 1"), ("negative", 1, -1, "reelect_every")])
    def test_bad_schedule(self, _, elect_round, reelect_every, message):
        with self.assertRaisesRegex(InputError, message):
            election_due(0, elect_round, reelect_every)


class TestFederatedElection(unittest.TestCase):
    def test_block_counts_cases_per_site_and_absent_sequences_add_nothing(self):
        # site A: 3 cases, no t1ce, flair best; site B: 1 case, t1ce best
        summaries = {
            "A": site_election_summary(_site_dice(3, t1ce_present=False, best=0), min_cases=1),
            "B": site_election_summary(_site_dice(1, t1ce_present=True, best=2), min_cases=1),
        }
        block = federated_election(summaries, MODALITIES, round_index=4, previous={"ET": "t2"})
        # compared on the cases with every sequence: B's alone (flair 0.5, t1ce 0.9); A adds nothing
        self.assertAlmostEqual(block["election_dice"]["WT"]["flair"], 0.5)
        self.assertAlmostEqual(block["election_dice"]["WT"]["t1ce"], 0.9)
        self.assertEqual(block["teachers"], {"ET": "t1ce", "TC": "t1ce", "WT": "t1ce"})
        self.assertEqual(block["federated"]["cases"]["ET"]["t1ce"], {"A": 0, "B": 1, "total": 1, "paired": True})
        self.assertEqual(block["federated"]["cases"]["ET"]["flair"], {"A": 0, "B": 1, "total": 1, "paired": True})
        self.assertEqual(block["federated"]["sites"], ["A", "B"])
        self.assertEqual(block["cases"], 4)
        self.assertEqual(block["elected_at"]["round"], 4)
        self.assertEqual(block["undecided"], [])

    def test_no_summary_is_an_error(self):
        with self.assertRaisesRegex(InputError, "none arrived"):
            federated_election({}, MODALITIES, round_index=1)

    def test_record_is_not_averaged(self):
        state = LCKDNet(**NETWORK_KEYS).state_dict()
        weights = network_weights(state)
        self.assertNotIn("_extra_state", weights)
        self.assertEqual(len(weights), len(state) - 1)
        self.assertTrue(all(value.device.type == "cpu" for value in weights.values()))


class TestGlobalModelWrites(unittest.TestCase):
    """The server writes model.pt and metadata.json only for a run that reaches its last round with every site."""

    def _controller(self, tmp: Path) -> LCKDFedAvg:
        controller = LCKDFedAvg(
            num_clients=2,
            num_rounds=3,
            configs=["configs/train.json", "configs/federated.json", "configs/demo.json"],
            bundle_root=str(BUNDLE_ROOT),
            ckpt_dir=str(tmp / "models"),
            metadata_file=str(fresh_metadata(tmp)),
        )
        controller.start_round = 0
        controller.load_model()
        return controller

    def _save_round(self, controller: LCKDFedAvg, round_index: int, returned: int) -> None:
        controller.current_round, controller._received_count, controller._expected_count = round_index, returned, 2
        weights = network_weights(controller._network.state_dict())
        controller.save_model(FLModel(params={key: value.numpy() for key, value in weights.items()}))

    def test_a_run_that_ends_short_leaves_the_previous_model_and_metadata(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            controller = self._controller(tmp)
            (tmp / "models").mkdir()
            (tmp / "models" / "model.pt").write_bytes(b"the previous run's global model")
            before = (tmp / "metadata.json").read_bytes()
            self._save_round(controller, 0, returned=1)  # a site did not return: nothing written
            self.assertFalse((tmp / "models" / "global_latest.pt").exists())
            self._save_round(controller, 1, returned=2)  # a whole round, not the last: progress only
            self.assertTrue((tmp / "models" / "global_latest.pt").is_file())
            self.assertEqual((tmp / "models" / "model.pt").read_bytes(), b"the previous run's global model")
            self.assertEqual((tmp / "metadata.json").read_bytes(), before)
            self._save_round(controller, 2, returned=2)  # the last round: model.pt and metadata.json together
            self.assertEqual(read_record(tmp / "models" / "model.pt")["network"]["filters"], [8, 16, 32, 64])
            self.assertFalse((tmp / "models" / "global_latest.pt").exists())
            block = json.loads((tmp / "metadata.json").read_text())["lckd"]
            self.assertEqual((block["teachers"], block["preprocessing"]["patch_size"]), (None, [32, 32, 32]))

    def test_a_run_that_ends_short_says_so(self):
        with tempfile.TemporaryDirectory() as tmp:
            controller = self._controller(Path(tmp))
            said = []
            controller.error = said.append

            def one_round_then_a_site_dies(self):
                self._save_round(controller, 0, returned=2)

            with mock.patch.object(FedAvg, "run", lambda _: one_round_then_a_site_dies(self)):
                controller.run()
            self.assertEqual(len(said), 1)
            self.assertIn("the federated run ended short: the global model of round 2 was never written", said[0])
            self.assertIn("last written: round 0, in global_latest.pt", said[0])
            self.assertFalse((Path(tmp) / "models" / "model.pt").exists())


class TestJobFolder(unittest.TestCase):
    def test_shipped_job_agrees_with_itself(self):
        server, site = job_settings(JOB_DIR)
        self.assertEqual(server["configs"], site["configs"])
        self.assertEqual(str(server["num_rounds"]), site["num_rounds"])
        meta = json.loads((JOB_DIR / "meta.json").read_text())
        self.assertEqual(meta["min_clients"], server["num_clients"])
        for config in server["configs"]:
            self.assertTrue((BUNDLE_ROOT / config).is_file(), config)

    @pytest.mark.slow
    def test_a_site_folder_missing_under_dataset_root_is_refused_before_the_job_is_written(self):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "sites" / "site-1").mkdir(parents=True)
            job, sites = Path(tmp) / "job", Path(tmp) / "sites"
            run = run_command(
                [
                    sys.executable,
                    "-m",
                    "bundle.federated.job",
                    "--out",
                    job,
                    "--num_clients",
                    "3",
                    "--dataset_root",
                    sites,
                ],
                timeout=120,
            )
            self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
            self.assertIn("has no folder for site-2, site-3", run.stderr)
            self.assertNotIn("Traceback", run.stderr)
            self.assertFalse((Path(tmp) / "job").exists())

    def test_configure_sets_server_and_sites_alike(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = configure_job(Path(tmp) / "job", num_rounds=7, num_clients=2, configs=["a.json", "b c.json"])
            server, site = job_settings(out)
            self.assertEqual((server["num_rounds"], site["num_rounds"]), (7, "7"))
            self.assertEqual(server["configs"], ["a.json", "b c.json"])
            self.assertEqual(site["configs"], ["a.json", "b c.json"])
            self.assertEqual(json.loads((out / "meta.json").read_text())["min_clients"], 2)
            self.assertTrue((out / "app" / "custom" / "site_main.py").is_file())
            with self.assertRaisesRegex(InputError, "already exists"):
                configure_job(out, num_rounds=1)
            with self.assertRaisesRegex(InputError, r"unknown job settings \['rounds'\]"):
                configure_job(Path(tmp) / "other", rounds=1)
            self.assertFalse((Path(tmp) / "other").exists())


def _make_sites(root: Path, cases: int = 5) -> None:
    """site-1 never acquires T1ce; site-2 has every sequence."""
    for index, (site, absent) in enumerate((("site-1", "t1ce"), ("site-2", None))):
        for folder in make_dataset(root / site, cases=cases, size=32, seed=20 + index):
            for path in folder.glob(f"*_{absent}.nii.gz") if absent else ():
                path.unlink()


class TestSiteData(unittest.TestCase):
    def test_a_site_without_a_sequence_trains_only_when_allowed(self):
        with tempfile.TemporaryDirectory() as tmp:
            _make_sites(Path(tmp), cases=3)
            datalist = load_datalist(str(Path(tmp) / "site-1"), modalities=MODALITIES, val_fraction=0.34)
            with self.assertRaisesRegex(InputError, r"modalities \['t1ce'\] have no file.*allow_absent_modalities"):
                check_dataset(datalist, MODALITIES, "brats2021", for_training=True)
            check_dataset(datalist, MODALITIES, "brats2021", for_training=True, allow_absent_modalities=True)

    def test_a_site_without_its_folder_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaisesRegex(InputError, "site-9: its dataset folder .* does not exist"):
                LCKDSite("site-9", dataset_dir=Path(tmp) / "site-9", workdir=tmp)


@pytest.mark.slow
class TestSimulator(unittest.TestCase):
    """Two sites, two rounds, a tiny network: the job as shipped, with only its settings changed."""

    @staticmethod
    def _simulate(tmp: Path) -> tuple[subprocess.CompletedProcess, Path]:
        """The shipped job over ``tmp/sites`` (2 sites, 2 rounds, election at round 1) under ``nvflare simulator``;
        returns the run and the metadata file it writes into (global model in ``tmp/global``)."""
        tiny = {
            **TINY_OVERRIDES,
            "val_fraction": 0.4,
            "test_fraction": 0.0,
            "val_interval": 2,
            "log_every": 5,
            "warmup_epochs": 1,
            "min_site_cases": 1,
        }
        (tmp / "tiny.json").write_text(json.dumps(tiny))
        metadata = fresh_metadata(tmp)
        configs = ["configs/train.json", "configs/federated.json", "configs/demo.json", str(tmp / "tiny.json")]
        job = configure_job(
            tmp / "job",
            num_clients=2,
            num_rounds=2,
            elect_round=1,
            reelect_every=0,
            configs=configs,
            dataset_root=str(tmp / "sites"),
            ckpt_dir=str(tmp / "global"),
            metadata_file=str(metadata),
        )
        nvflare = Path(sys.executable).with_name("nvflare")
        run = run_command(
            [nvflare, "simulator", job, "-w", tmp / "workspace", "-n", "2", "-t", "2"], cwd=None, env=SUBPROCESS_ENV
        )
        return run, metadata

    def test_a_site_that_fails_leaves_the_previous_global_model_and_says_the_run_ended_short(self):
        """Issue 26, items 4-5: site-2's data cannot be read, so no round completes."""
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _make_sites(tmp / "sites", cases=3)
            broken = next((tmp / "sites" / "site-2").rglob("*_t2.nii.gz"))
            broken.write_bytes(broken.read_bytes()[:200])  # truncated
            (tmp / "global").mkdir()
            (tmp / "global" / "model.pt").write_bytes(b"the previous run's global model")
            before = fresh_metadata(tmp).read_bytes()
            run, metadata = self._simulate(tmp)
            log = run.stdout + run.stderr
            self.assertIn("the federated run ended short: the global model of round 1 was never written", log)
            self.assertEqual((tmp / "global" / "model.pt").read_bytes(), b"the previous run's global model")
            self.assertEqual(metadata.read_bytes(), before)
            self.assertFalse((tmp / "global" / "global_latest.pt").exists())

    def test_two_sites_two_rounds_give_a_global_model_with_federated_teachers(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _make_sites(tmp / "sites")
            run, metadata = self._simulate(tmp)
            log = run.stdout + run.stderr
            self.assertEqual(run.returncode, 0, log[-3000:])
            self.assertIn("federated teacher election on the global model of round 1", log)

            election = json.loads(metadata.read_text())["lckd"]
            self.assertEqual(election["federated"]["sites"], ["site-1", "site-2"])
            self.assertEqual(election["elected_at"]["round"], 1)
            # each site validates on 2 of its 5 cases; site-1 has no t1ce, so the sequences are compared on site-2's
            self.assertEqual(election["cases"], 4)
            for region in ("ET", "TC", "WT"):
                for modality in ("flair", "t1ce"):
                    self.assertEqual(
                        election["federated"]["cases"][region][modality],
                        {"site-1": 0, "site-2": 2, "total": 2, "paired": True},
                    )
            self.assertEqual(set(election["teachers"]), {"ET", "TC", "WT"})

            record = read_record(tmp / "global" / "model.pt")
            self.assertEqual(record["teachers"], election["teachers"])
            self.assertEqual(record["federated"], election["federated"])  # the per-site case counts travel too
            self.assertEqual(record["network"]["filters"], TINY_OVERRIDES["filters"])
            for site in ("site-1", "site-2"):  # the sites' own checkpoints stay in their workspaces
                self.assertTrue(list((tmp / "workspace" / site).rglob("models/latest_checkpoint*.pt")), site)

            settings = {k: v for k, v in TINY_NETWORK.items() if k not in NETWORK_KEYS}
            settings.update(
                dataset_dir=str(tmp / "sites" / "site-1"),
                output_dir=str(tmp / "segmentations"),
                ckpt_path=str(tmp / "global" / "model.pt"),
            )
            run_inference(settings, tmp)
            outputs = sorted((tmp / "segmentations").rglob("*.nii.gz"))
            self.assertEqual(len(outputs), 5)
            self.assertEqual(nib.load(outputs[0]).shape, (32, 32, 32))
            self.assertTrue(set(np.unique(np.asarray(nib.load(outputs[0]).dataobj))) <= {0, 1, 2, 4})
