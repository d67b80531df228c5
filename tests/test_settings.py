"""Settings are checked for type, range, memory and spelling before anything runs (bundle/settings.py)."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from monai.bundle import ConfigParser
from parameterized import parameterized

from bundle.errors import InputError
from bundle.settings import check_command_line, check_settings, config_settings, rules
from tests.helpers import BUNDLE_ROOT, CONFIGS

GOOD = {
    "modalities": ["flair", "t1", "t1ce", "t2"],
    "device": "cpu",
    "max_epochs": 300,
    "elect_epoch": 50,
    "warmup_epochs": 120,
    "patch_size": [64, 64, 64],
    "filters": [16, 32, 64, 128, 160],
    "kernel_size": [3, 3, 3, 3, 3],
    "strides": [1, 2, 2, 2, 2],
    "batch_size": 2,
    "num_samples": 2,
    "sw_batch_size": 2,
    "overlap": 0.5,
    "val_fraction": 0.2,
    "test_fraction": 0.0,
    "resume": "false",
}


class TestCheckSettings(unittest.TestCase):
    @parameterized.expand([("train.json",), ("inference.json",), ("evaluate.json",), ("elect.json",)])
    def test_each_config_checks_every_key_it_defines_as_parsed(self, name):
        parser = ConfigParser()
        overrides = ("evaluate.json", "elect.json")  # merged over train.json
        parser.read_config([str(CONFIGS / n) for n in (["train.json"] if name in overrides else []) + [name]])
        # the default 128^3 patch needs a GPU's memory for training; no model: the record's defaults
        parser.update({"bundle_root": str(BUNDLE_ROOT), "ckpt_path": "/nonexistent/model.pt", "patch_size": [64] * 3})
        parser.update({"num_workers": 3, "probe": "$bundle.settings.config_settings()"})
        settings = parser.get_parsed_content("probe")
        defined = {key for key in rules() if key in parser.get() and parser.get_parsed_content(key) is not None}
        self.assertEqual(set(settings), defined | {"patch_size", "pixdim"}, name)
        self.assertEqual(settings["num_workers"], 3)  # an override, as the workflow reads it
        self.assertEqual(settings["device"], parser.get_parsed_content("device"))
        check_settings(settings)

    def test_a_bad_value_stops_the_workflow_before_anything_is_built(self):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json")])
        parser.update({"bundle_root": str(BUNDLE_ROOT), "ckpt_path": "/nonexistent/model.pt", "overlap": 1.5})
        with self.assertRaises(RuntimeError) as raised:  # MONAI wraps what an expression raises
            parser.get_parsed_content("initialize")
        self.assertRegex(str(raised.exception.__cause__), r"--overlap must be a number >= 0 and < 1; got 1.5")

    def test_config_settings_needs_a_config_being_parsed(self):
        with self.assertRaisesRegex(RuntimeError, r"must be called from a config expression"):
            config_settings()

    @parameterized.expand(
        [
            ("fraction_of_an_epoch", {"max_epochs": 2.5}, r"--max_epochs must be a whole number >= 1; got 2.5"),
            ("a_word", {"max_epochs": "ten"}, r"--max_epochs must be a whole number >= 1; got 'ten'"),
            ("a_bool_is_not_a_number", {"batch_size": True}, r"--batch_size must be a whole number >= 1; got True"),
            ("negative_overlap", {"overlap": -0.5}, r"--overlap must be a number >= 0 and < 1; got -0.5"),
            ("overlap_of_one", {"overlap": 1.0}, r"--overlap must be a number >= 0 and < 1; got 1.0"),
            ("zero_window_batch", {"sw_batch_size": 0}, r"--sw_batch_size must be a whole number >= 1; got 0"),
            ("nan_learning_rate", {"learning_rate": float("nan")}, r"--learning_rate must be a number > 0"),
            ("two_axis_patch", {"patch_size": [64, 64]}, r"--patch_size must be a list of 3 whole numbers"),
            ("negative_spacing", {"pixdim": [1.0, -1.0, 1.0]}, r"--pixdim must be three voxel sizes in mm"),
            ("boolean_typo", {"amp": "maybe"}, r"--amp must be true or false"),
            ("unknown_choice", {"fill": "zeros"}, r"--fill must be one of \['all_levels', 'bottleneck'\]; got 'zeros'"),
            ("duplicate_modality", {"modalities": ["t1", "t1"]}, r"--modalities must be unique"),
            ("absent_gpu", {"device": "cuda:3"}, r"--device must be a device this machine has: it sees \d+ CUDA GPU"),
            ("not_a_device", {"device": "tpu"}, r"--device must be a torch device such as 'cpu' or 'cuda:0'"),
        ]
    )
    def test_type_and_range(self, _, change, message):
        with mock.patch("torch.cuda.is_available", return_value=False):
            with self.assertRaisesRegex(InputError, message):
                check_settings({**GOOD, **change})

    def test_every_problem_is_listed_at_once(self):
        with self.assertRaises(InputError) as caught:
            check_settings({**GOOD, "max_epochs": 2.5, "overlap": 1.0, "sw_batch_size": 0})
        self.assertTrue(str(caught.exception).startswith("3 problem(s) in the settings:"))

    @parameterized.expand(
        [
            (
                "levels_differ",
                {"kernel_size": [3, 3, 3]},
                r"kernel_size and strides must have the same length.*kernel_size=\[3, 3, 3\]",
            ),
            ("warmup_after_end", {"warmup_epochs": 300}, r"warmup_epochs=300 is not before the last epoch"),
            ("fractions_leave_no_training", {"val_fraction": 0.6, "test_fraction": 0.4}, r"must be below 1"),
            ("patch_beyond_memory", {"patch_size": [512, 512, 512]}, r"needs about \d+\.\d GB for one training step"),
        ]
    )
    def test_relations_between_keys(self, _, change, message):
        with self.assertRaisesRegex(InputError, message):
            check_settings({**GOOD, **change})

    def test_memory_estimate_refuses_what_does_not_fit_and_names_a_patch_that_does(self):
        with mock.patch("bundle.settings.device_memory", return_value=4 * 2**30):
            with self.assertRaisesRegex(
                InputError, r"needs about 6.0 GB .* more than its 4.0 GB; lower patch_size \(e\.g\. \[96, 96, 96\]\)"
            ):
                check_settings({**GOOD, "patch_size": [128, 128, 128], "batch_size": 1, "num_samples": 1})
            check_settings({**GOOD, "patch_size": [96, 96, 96], "batch_size": 1, "num_samples": 1})


class TestCommandLine(unittest.TestCase):
    def _argv(self, *extra: str) -> list[str]:
        files = [str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")]
        return ["monai.bundle", "run", "--config_file", repr(files), *extra]

    def test_known_keys_nested_ids_and_run_arguments_pass(self):
        check_command_line(self._argv("--max_epochs", "2", "--train::trainer::max_epochs", "2", "--meta_file", "m"))

    def test_a_typo_names_the_closest_key(self):
        with self.assertRaisesRegex(InputError, r"unknown setting --max_epoch \(did you mean --max_epochs\?\)"):
            check_command_line(self._argv("--max_epoch", "2"))
        with self.assertRaisesRegex(InputError, r"unknown setting --lerning_rate \(did you mean --learning_rate\?\)"):
            check_command_line(self._argv("--lerning_rate=0.1"))

    def test_keys_of_an_args_file_are_known(self):
        with tempfile.TemporaryDirectory() as tmp:
            args = Path(tmp) / "args.json"
            args.write_text(json.dumps({"my_key": 1}))
            check_command_line(self._argv("--args_file", str(args), "--my_key", "2"))

    def test_started_from_python_nothing_is_checked(self):
        check_command_line(["pytest", "-q", "--anything"])
