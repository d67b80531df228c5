import json
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory
from unittest import mock

import torch
from monai.inferers import SimpleInferer
from parameterized import parameterized

from bundle.conventions import label_regions
from bundle.errors import InputError
from bundle.handlers import ElectionHandler
from bundle.losses import LCKDLoss
from bundle.metadata import EXPECTED_DICE_KEY, metadata_without_election, update_metadata
from bundle.metrics import (
    MIN_SITE_CASES,
    bootstrap_win_rate,
    combine_site_elections,
    elect_teachers,
    paired_cases,
    site_election_summary,
    undecided_regions,
)
from bundle.networks import LCKDNet, record_election
from bundle.reports import format_election

MODALITIES = ["flair", "t1", "t1ce", "t2"]
NAN_ = float("nan")


def dice_table(means):
    """(cases=3, N, 3 regions in TC, WT, ET order) with the given per-modality means per region."""
    table = torch.tensor(means, dtype=torch.float64).T[None].repeat(3, 1, 1)  # means: 3 regions x N
    return table


class TestElectTeachers(unittest.TestCase):
    def test_argmax_per_region(self):
        # rows: TC, WT, ET; columns: flair, t1, t1ce, t2
        dice = dice_table([[0.5, 0.2, 0.8, 0.6], [0.9, 0.3, 0.4, 0.7], [0.1, 0.1, 0.7, 0.2]])
        teachers, table = elect_teachers(dice, MODALITIES)
        self.assertEqual(teachers, {"ET": "t1ce", "TC": "t1ce", "WT": "flair"})
        self.assertEqual(list(table), ["ET", "TC", "WT"])
        self.assertAlmostEqual(table["WT"]["flair"], 0.9)

    def test_ties_go_to_canonical_order(self):
        dice = dice_table([[0.5, 0.5, 0.5, 0.5], [0.2, 0.6, 0.6, 0.6], [0.1, 0.1, 0.3, 0.3]])
        teachers, _ = elect_teachers(dice, MODALITIES)
        self.assertEqual(teachers, {"ET": "t1ce", "TC": "flair", "WT": "t1"})

    def test_nan_cases_are_skipped_and_never_win(self):
        dice = dice_table([[0.5, 0.2, 0.8, 0.6], [0.9, 0.3, 0.4, 0.7], [0.1, 0.1, 0.7, 0.2]])
        dice[0, 2, 2] = float("nan")  # one case without t1ce
        dice[:, 0, 1] = float("nan")  # flair never had WT
        teachers, table = elect_teachers(dice, MODALITIES)
        self.assertEqual(teachers["ET"], "t1ce")
        self.assertEqual(teachers["WT"], "t2")
        self.assertIsNone(table["WT"]["flair"])

    def test_a_region_no_case_holds_is_undecided_not_flair(self):
        dice = dice_table([[0.5, 0.2, 0.8, 0.6], [0.9, 0.3, 0.4, 0.7], [0.1, 0.1, 0.7, 0.2]])
        dice[:, :, 2] = float("nan")  # no validation case has ET
        teachers, table = elect_teachers(dice, MODALITIES)
        self.assertEqual(teachers, {"TC": "t1ce", "WT": "flair"})  # no ET teacher before the first election
        self.assertEqual(undecided_regions(table), ["ET"])
        kept, _ = elect_teachers(dice, MODALITIES, previous={"ET": "t1ce", "TC": "t2", "WT": "t2"})
        self.assertEqual(kept, {"ET": "t1ce", "TC": "t1ce", "WT": "flair"})  # ET keeps its teacher, the others re-elect
        rates = bootstrap_win_rate(dice, MODALITIES, resamples=50)
        self.assertNotIn("ET", rates)  # no 100 % win for flair
        text = format_election(
            {"modalities": MODALITIES, "teachers": kept, "election_dice": table, "undecided": ["ET"]}
        )
        self.assertIn("undecided (no case holds ET; kept t1ce)", text)

    def test_win_rate_certain_and_uncertain(self):
        torch.manual_seed(0)
        clear = dice_table([[0.5, 0.2, 0.8, 0.6], [0.9, 0.3, 0.4, 0.7], [0.1, 0.1, 0.7, 0.2]]).repeat(4, 1, 1)
        rates = bootstrap_win_rate(clear + 0.01 * torch.rand_like(clear), MODALITIES, resamples=200)
        self.assertEqual(rates["WT"]["flair"], 1.0)
        noisy = torch.rand(12, 4, 3, dtype=torch.float64)
        rates = bootstrap_win_rate(noisy, MODALITIES, resamples=200)
        for region in ("ET", "TC", "WT"):
            self.assertAlmostEqual(sum(rates[region].values()), 1.0, places=6)
            self.assertLess(max(rates[region].values()), 1.0)
        self.assertEqual(rates, bootstrap_win_rate(noisy, MODALITIES, resamples=200))  # seeded

    def test_sequences_are_compared_on_the_cases_that_have_them_all(self):
        """Site A's 3 cases lack T1ce (flair 0.4 each), site B's 3 have both (flair 0.9, T1ce 0.85): flair beats T1ce on
        every case that has both, while per-sequence means over the cases that have each (flair 3.9 / 6 = 0.65, T1ce
        0.85) would elect T1ce."""
        rows = [[0.4, NAN_, NAN_, 0.1]] * 3 + [[0.9, 0.2, 0.85, 0.1]] * 3
        dice = torch.tensor(rows, dtype=torch.float64)[:, :, None].repeat(1, 1, 3)
        teachers, table = elect_teachers(dice, MODALITIES)
        self.assertEqual(teachers, {"ET": "flair", "TC": "flair", "WT": "flair"})
        self.assertAlmostEqual(table["ET"]["flair"], 0.9)
        self.assertAlmostEqual(table["ET"]["t1ce"], 0.85)
        self.assertEqual(paired_cases(dice), {"ET": 3, "TC": 3, "WT": 3})
        self.assertEqual(bootstrap_win_rate(dice, MODALITIES, resamples=100)["ET"]["flair"], 1.0)
        # no case has every sequence: each sequence's mean over the cases that have it (the documented fallback)
        dice[3:, 1] = NAN_
        self.assertEqual(paired_cases(dice)["ET"], 0)
        self.assertEqual(elect_teachers(dice, MODALITIES)[0]["ET"], "t1ce")

    def test_bad_table_shape(self):
        with self.assertRaisesRegex(ValueError, "dice must be"):
            elect_teachers(torch.rand(3, 2, 3), MODALITIES)


NAN = float("nan")


class TestPairedFederatedElection(unittest.TestCase):
    def test_sites_send_paired_sums_and_the_example_elects_flair(self):
        a = site_dice(3, [[0.4] * 3, [0.2] * 3, [NAN] * 3, [0.1] * 3])  # no T1ce
        b = site_dice(3, [[0.9] * 3, [0.2] * 3, [0.85] * 3, [0.1] * 3])
        summaries = {"A": site_election_summary(a, min_cases=3), "B": site_election_summary(b, min_cases=3)}
        teachers, table, cases = combine_site_elections(summaries, MODALITIES)
        self.assertEqual(teachers, {"ET": "flair", "TC": "flair", "WT": "flair"})
        self.assertAlmostEqual(table["WT"]["flair"], 0.9)
        self.assertEqual(cases["WT"]["flair"], {"A": 0, "B": 3, "total": 3, "paired": True})
        self.assertEqual(summaries["A"]["paired_cases"], [0, 0, 0])
        self.assertEqual(summaries["B"]["paired_cases"], [3, 3, 3])

    def test_a_sum_of_fewer_than_min_cases_is_not_sent(self):
        one_case = site_election_summary(site_dice(1, [[0.9] * 3] * 4))  # MIN_SITE_CASES = 5
        self.assertEqual(one_case["dice_sum"], [[0.0] * 3] * 4)
        self.assertEqual(one_case["cases"], [[0] * 3] * 4)
        self.assertEqual(one_case["paired_dice_sum"], [[0.0] * 3] * 4)
        self.assertEqual(one_case["paired_cases"], [0, 0, 0])
        self.assertEqual(MIN_SITE_CASES, 5)
        five = site_election_summary(site_dice(5, [[0.9] * 3] * 4))
        self.assertAlmostEqual(five["paired_dice_sum"][0][0], 4.5)
        with self.assertRaisesRegex(InputError, "min_cases must be"):
            site_election_summary(site_dice(5, [[0.9] * 3] * 4), min_cases=0)


def summary(dice):
    """A site's summary with every sum sent (the tests' sites are smaller than MIN_SITE_CASES)."""
    return site_election_summary(dice, min_cases=1)


def site_dice(cases, values):
    """(cases, 4 modalities, 3 regions): every case scores ``values[modality][region]`` (NaN: absent)."""
    return torch.tensor(values, dtype=torch.float64)[None].repeat(cases, 1, 1)


class TestFederatedElection(unittest.TestCase):
    def test_case_weighted_over_sites(self):
        # regions in network order TC, WT, ET; site A: 9 cases, flair best for WT; site B: 1 case, t2 best
        a = site_dice(9, [[0.5, 0.90, 0.2], [0.4, 0.5, 0.1], [0.8, 0.6, 0.7], [0.4, 0.80, 0.3]])
        b = site_dice(1, [[0.5, 0.10, 0.2], [0.4, 0.5, 0.1], [0.8, 0.6, 0.7], [0.4, 0.95, 0.3]])
        summaries = {"A": summary(a), "B": summary(b)}
        teachers, table, cases = combine_site_elections(summaries, MODALITIES)
        self.assertEqual(teachers, {"ET": "t1ce", "TC": "t1ce", "WT": "flair"})
        self.assertAlmostEqual(table["WT"]["flair"], (9 * 0.9 + 0.1) / 10, places=4)  # 0.82, not the site mean 0.5
        self.assertAlmostEqual(table["WT"]["t2"], (9 * 0.8 + 0.95) / 10, places=4)
        self.assertEqual(cases["WT"]["flair"], {"A": 9, "B": 1, "total": 10, "paired": True})

    def test_a_site_without_a_sequence_adds_nothing_to_it(self):
        a = site_dice(4, [[0.5, 0.9, 0.2], [0.4, 0.5, 0.1], [NAN, NAN, NAN], [0.4, 0.8, 0.3]])  # never has t1ce
        b = site_dice(2, [[0.5, 0.9, 0.2], [0.4, 0.5, 0.1], [0.8, 0.6, 0.7], [0.4, 0.8, 0.3]])
        teachers, table, cases = combine_site_elections({"A": summary(a), "B": summary(b)}, MODALITIES)
        self.assertEqual(cases["ET"]["t1ce"], {"A": 0, "B": 2, "total": 2, "paired": True})
        self.assertAlmostEqual(table["ET"]["t1ce"], 0.7, places=4)  # B's mean, not diluted by A's zeros
        self.assertEqual(teachers["ET"], "t1ce")
        c = site_dice(3, [[NAN, NAN, NAN]] * 2 + [[0.8, 0.6, 0.7], [NAN, NAN, NAN]])  # only t1ce
        _, table, _ = combine_site_elections({"C": summary(c)}, MODALITIES)
        self.assertIsNone(table["ET"]["flair"])  # no site has a case behind the cell

    def test_ties_go_to_the_earlier_sequence(self):
        same = site_dice(2, [[0.6, 0.6, 0.6]] * 4)
        teachers, _, _ = combine_site_elections({"A": summary(same)}, MODALITIES)
        self.assertEqual(teachers, {"ET": "flair", "TC": "flair", "WT": "flair"})

    def test_a_region_no_site_holds_keeps_its_teacher(self):
        no_et = site_dice(3, [[0.5, 0.9, NAN], [0.4, 0.5, NAN], [0.8, 0.6, NAN], [0.4, 0.8, NAN]])
        summaries = {"A": summary(no_et)}
        teachers, table, _ = combine_site_elections(summaries, MODALITIES, previous={"ET": "t1ce"})
        self.assertEqual(teachers["ET"], "t1ce")
        self.assertEqual(undecided_regions(table), ["ET"])
        self.assertNotIn("ET", combine_site_elections(summaries, MODALITIES)[0])

    def test_federated_equals_pooled(self):
        torch.manual_seed(0)
        cases = torch.rand(12, 4, 3, dtype=torch.float64)
        cases[:5, 2] = NAN  # the first site never acquires t1ce
        sites = {"A": cases[:5], "B": cases[5:9], "C": cases[9:]}
        federated = combine_site_elections({k: summary(v) for k, v in sites.items()}, MODALITIES)
        pooled = elect_teachers(cases, MODALITIES)
        self.assertEqual(federated[0], pooled[0])
        for region, scores in pooled[1].items():
            for modality, score in scores.items():
                self.assertAlmostEqual(federated[1][region][modality], score, places=4)

    def test_malformed_summary_is_refused(self):
        with self.assertRaisesRegex(InputError, r"site 'A' sent an election summary of shape \[3, 3\]"):
            combine_site_elections({"A": {"dice_sum": [[0.0] * 3] * 3, "cases": [[1] * 3] * 3}}, MODALITIES)


class TestMetadataWrite(unittest.TestCase):
    def test_keeps_other_keys(self):
        with TemporaryDirectory() as tmp:
            path = Path(tmp) / "metadata.json"
            path.write_text(json.dumps({"version": "0.1.0", "network_data_format": {"inputs": {}}}))
            update_metadata(path, {"teachers": {"ET": "t1ce"}})
            data = json.loads(path.read_text())
            self.assertEqual(data["version"], "0.1.0")
            self.assertEqual(data["network_data_format"], {"inputs": {}})
            self.assertEqual(data["lckd"]["teachers"], {"ET": "t1ce"})

    def test_failure_mid_write_keeps_old_file(self):
        with TemporaryDirectory() as tmp:
            path = Path(tmp) / "metadata.json"
            original = json.dumps({"version": "0.1.0"})
            path.write_text(original)
            with mock.patch("os.fsync", side_effect=OSError(28, "No space left on device")):
                with self.assertRaises(OSError):
                    update_metadata(path, {"teachers": {"ET": "t1ce"}})
            self.assertEqual(path.read_text(), original)
            self.assertEqual(sorted(p.name for p in Path(tmp).iterdir()), ["metadata.json"])  # no temp file left

    def test_copy_without_election_keeps_every_other_key(self):
        shipped = json.loads((Path(__file__).resolve().parents[1] / "configs" / "metadata.json").read_text())
        shipped.pop("lckd", None)
        shipped.pop(EXPECTED_DICE_KEY, None)  # what an evaluation of the checkout's model adds
        with TemporaryDirectory() as tmp:
            path = metadata_without_election(Path(tmp) / "metadata.json")
            self.assertEqual(json.loads(path.read_text()), shipped)
            update_metadata(path, {"teachers": {"ET": "t1ce"}})
            self.assertEqual(json.loads(metadata_without_election(path).read_text()), shipped)


class OracleNet(torch.nn.Module):
    """Predicts the label map's regions perfectly from modality 2 only (ET/TC) and modality 0 only (WT)."""

    def __init__(self, label):
        super().__init__()
        self.regions = torch.as_tensor(label_regions(label), dtype=torch.float32)[None]
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.record = {"teachers": None, "federated": None}  # as LCKDNet's: an election writes its teachers here

    def forward(self, x, mask):
        good = torch.stack([mask[:, 2], mask[:, 0], mask[:, 2]], dim=1)[:, :, None, None, None]
        return torch.where(good, self.regions * 20 - 10, torch.full_like(self.regions, -10.0))


def nested_label() -> torch.Tensor:
    """A label map (1, 1, 8, 8, 8): oedema around an enhancing rim around necrosis (BraTS 2018-2021 values)."""
    label = torch.zeros(1, 1, 8, 8, 8)
    label[..., 1:7, 1:7, 1:7] = 2
    label[..., 2:6, 2:6, 2:6] = 4
    label[..., 3:5, 3:5, 3:5] = 1
    return label


class TestElectionHandler(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.label = nested_label()
        self.loader = [
            {"image": torch.randn(1, 4, 8, 8, 8), "label": self.label, "mask": torch.ones(1, 4, dtype=torch.bool)}
            for _ in range(3)
        ]

    def test_elects_writes_and_applies(self):
        with TemporaryDirectory() as tmp:
            meta = Path(tmp) / "metadata.json"
            meta.write_text(json.dumps({"version": "1.0"}))
            loss = LCKDLoss(MODALITIES)
            handler = ElectionHandler(
                OracleNet(self.label),
                self.loader,
                SimpleInferer(),
                MODALITIES,
                loss=loss,
                metadata_file=meta,
                resamples=50,
            )
            with self.assertLogs("bundle.handlers.election", level="INFO") as logs:
                result = handler.elect(epoch=3)
            self.assertEqual(result["teachers"], {"ET": "t1ce", "TC": "t1ce", "WT": "flair"})
            self.assertEqual(result["election_dice"]["WT"]["flair"], 1.0)
            self.assertEqual(result["election_dice"]["WT"]["t1"], 0.0)
            self.assertEqual(result["win_rate"]["ET"]["t1ce"], 1.0)
            self.assertIn("teacher", "\n".join(logs.output))
            self.assertEqual(loss.teachers, result["teachers"])
            stored = json.loads(meta.read_text())
            self.assertEqual(stored["version"], "1.0")
            self.assertEqual(stored["lckd"]["teachers"], result["teachers"])
            self.assertEqual(stored["lckd"]["elected_at"]["epoch"], 3)
            self.assertIn("WT", format_election(result))

    def test_metadata_names_the_teachers_of_the_saved_model_and_keeps_a_later_election_apart(self):
        with TemporaryDirectory() as tmp:
            meta = Path(tmp) / "metadata.json"
            meta.write_text(json.dumps({"version": "1.0"}))
            handler = ElectionHandler(
                OracleNet(self.label), self.loader, SimpleInferer(), MODALITIES, metadata_file=meta
            )
            first = handler.elect(epoch=1)
            handler._epoch = 1
            handler.model_saved({"score_name": "val_combinations_dice", "priority": 0.5})
            block = json.loads(meta.read_text())["lckd"]
            self.assertEqual(block["teachers"], first["teachers"])
            self.assertEqual(block["model"], {"epoch": 1, "metric": "val_combinations_dice", "value": 0.5})
            self.assertNotIn("last_election", block)
            handler.network.regions[:] = 0  # from now on no sequence finds anything: the election changes
            second = handler.elect(epoch=2)
            self.assertNotEqual(second["teachers"], first["teachers"])
            block = json.loads(meta.read_text())["lckd"]
            self.assertEqual(block["teachers"], first["teachers"])  # still the saved model's
            self.assertEqual(block["last_election"]["teachers"], second["teachers"])
            self.assertEqual(handler.model_teachers, first["teachers"])
            state = handler.state_dict()  # a resumed run knows both
            network = OracleNet(self.label)
            network.record.update(handler.network.record)  # the checkpoint's weights, loaded before the election
            resumed = ElectionHandler(network, self.loader, SimpleInferer(), MODALITIES)
            resumed.load_state_dict(state)
            self.assertEqual((resumed.teachers, resumed.model_teachers), (second["teachers"], first["teachers"]))

    def test_validation_without_et_keeps_the_et_teacher_and_says_so(self):
        with TemporaryDirectory() as tmp:
            meta = Path(tmp) / "metadata.json"
            meta.write_text(json.dumps({"version": "1.0"}))
            loss = LCKDLoss(MODALITIES)
            handler = ElectionHandler(
                OracleNet(self.label), self.loader, SimpleInferer(), MODALITIES, loss=loss, metadata_file=meta
            )
            handler.elect(epoch=1)
            for batch in self.loader:
                batch["label"] = torch.where(batch["label"] == 4, 1.0, batch["label"])  # no validation case has ET
            with self.assertLogs("bundle.handlers.election", level="WARNING") as logs:
                result = handler.elect(epoch=2)
            self.assertEqual(result["undecided"], ["ET"])
            self.assertEqual(result["teachers"]["ET"], "t1ce")  # kept from epoch 1
            self.assertNotIn("ET", result["win_rate"])
            self.assertIn("ET is undecided: none of the 3 validation cases contains it", "\n".join(logs.output))
            self.assertEqual(json.loads(meta.read_text())["lckd"]["undecided"], ["ET"])
            self.assertEqual(loss.teachers["ET"], "t1ce")

    def test_state_round_trip_through_checkpoint(self):
        loss = LCKDLoss(MODALITIES)
        handler = ElectionHandler(
            OracleNet(self.label), self.loader, SimpleInferer(), MODALITIES, loss=loss, resamples=0
        )
        handler.elect(epoch=1)
        trained = LCKDNet(filters=(4, 8, 16, 32))
        record_election(trained, handler.result)  # what an election does to the trainer's network
        with TemporaryDirectory() as tmp:
            path = Path(tmp) / "ckpt.pt"
            torch.save({"model": trained.state_dict(), "lckd": handler.state_dict()}, path)
            checkpoint = torch.load(path, weights_only=True)
        self.assertNotIn("teachers", checkpoint["lckd"])  # one copy per file: the weights' record holds it
        network = LCKDNet(filters=(4, 8, 16, 32))
        network.load_state_dict(checkpoint["model"])  # the network first, as in train.json's save_dict
        restored_loss = LCKDLoss(MODALITIES)
        restored = ElectionHandler(network, [], SimpleInferer(), MODALITIES, loss=restored_loss)
        restored.load_state_dict(checkpoint["lckd"])
        self.assertEqual(restored.teachers, handler.teachers)
        self.assertEqual(restored_loss.teachers, handler.teachers)
        self.assertEqual(restored_loss.teacher_index.tolist(), [0, 2])

    def test_other_modalities_refused(self):
        handler = ElectionHandler(OracleNet(self.label), [], SimpleInferer(), MODALITIES)
        with self.assertRaisesRegex(ValueError, "same modalities"):
            handler.load_state_dict({"modalities": ["t1", "t2"], "teachers": {"ET": "t1", "TC": "t1", "WT": "t2"}})

    @parameterized.expand(
        [({"elect_epoch": 0}, "elect_epoch must be a whole number >= 1"), ({"reelect_every": -1}, "reelect_every")]
    )
    def test_bad_options(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            ElectionHandler(OracleNet(self.label), [], SimpleInferer(), MODALITIES, **kwargs)

    def test_schedule(self):
        handler = ElectionHandler(
            OracleNet(self.label), [], SimpleInferer(), MODALITIES, elect_epoch=2, reelect_every=3
        )
        self.assertEqual([e for e in range(1, 12) if handler._due(None, e)], [2, 5, 8, 11])
        once = ElectionHandler(OracleNet(self.label), [], SimpleInferer(), MODALITIES, elect_epoch=2)
        self.assertEqual([e for e in range(1, 12) if once._due(None, e)], [2])

    def test_real_network_runs(self):
        net = LCKDNet(filters=(4, 8, 16, 32))
        label = torch.randint(0, 3, (1, 1, 16, 16, 16)).float() * 2  # background, oedema, enhancing
        loader = [
            {"image": torch.randn(1, 4, 16, 16, 16), "label": label, "mask": torch.ones(1, 4, dtype=torch.bool)}
        ] * 2
        handler = ElectionHandler(net, loader, SimpleInferer(), MODALITIES, resamples=10)
        result = handler.elect()
        for region in ("ET", "TC", "WT"):
            for value in result["election_dice"][region].values():
                self.assertTrue(0.0 <= value <= 1.0)
        self.assertTrue(net.training)  # mode restored
