"""Settings are checked for type, range, memory and spelling before anything runs (bundle/settings.py)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from monai.bundle import ConfigParser

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


def _parsed(name: str, **overrides) -> ConfigParser:
    """A workflow's config as ``monai.bundle run`` parses it (evaluate.json and elect.json merged over train.json),
    with no trained model (the record's defaults)."""
    parser = ConfigParser()
    merged = ["train.json"] if name in ("evaluate.json", "elect.json") else []
    parser.read_config([str(CONFIGS / n) for n in [*merged, name]])
    parser.update({"bundle_root": str(BUNDLE_ROOT), "ckpt_path": "/nonexistent/model.pt", **overrides})
    return parser


@pytest.mark.parametrize("name", ["train.json", "inference.json", "evaluate.json", "elect.json"])
def test_each_config_checks_every_key_it_defines_as_parsed(name):
    # the default 128^3 patch needs a GPU's memory for training
    parser = _parsed(name, patch_size=[64] * 3, num_workers=3, probe="$bundle.settings.config_settings()")
    settings = parser.get_parsed_content("probe")
    defined = {key for key in rules() if key in parser.get() and parser.get_parsed_content(key) is not None}
    assert set(settings) == defined | {"patch_size", "pixdim"}
    assert settings["num_workers"] == 3  # an override, as the workflow reads it
    assert settings["device"] == parser.get_parsed_content("device")
    check_settings(settings)


def test_a_bad_value_stops_the_workflow_before_anything_is_built():
    parser = _parsed("inference.json", overlap=1.5)
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps what an expression raises
        parser.get_parsed_content("initialize")
    assert "--overlap must be a number >= 0 and < 1; got 1.5" in str(raised.value.__cause__)


def test_config_settings_needs_a_config_being_parsed():
    with pytest.raises(RuntimeError, match=r"must be called from a config expression"):
        config_settings()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_epochs": 2.5}, r"--max_epochs must be a whole number >= 1; got 2.5"),
        ({"max_epochs": "ten"}, r"--max_epochs must be a whole number >= 1; got 'ten'"),
        ({"batch_size": True}, r"--batch_size must be a whole number >= 1; got True"),
        ({"overlap": -0.5}, r"--overlap must be a number >= 0 and < 1; got -0.5"),
        ({"overlap": 1.0}, r"--overlap must be a number >= 0 and < 1; got 1.0"),
        ({"sw_batch_size": 0}, r"--sw_batch_size must be a whole number >= 1; got 0"),
        ({"learning_rate": float("nan")}, r"--learning_rate must be a number > 0"),
        ({"patch_size": [64, 64]}, r"--patch_size must be a list of 3 whole numbers"),
        ({"pixdim": [1.0, -1.0, 1.0]}, r"--pixdim must be three voxel sizes in mm"),
        ({"amp": "maybe"}, r"--amp must be true or false"),
        ({"fill": "zeros"}, r"--fill must be one of \['all_levels', 'bottleneck'\]; got 'zeros'"),
        ({"elect_epoch": 0}, r"--elect_epoch must be a whole number >= 1 \(epochs of warm-up"),
        ({"cache": "ram"}, r"--cache must be one of \['auto', 'memory', 'disk', 'none'\]; got 'ram'"),
        ({"modalities": ["t1", "t1"]}, r"--modalities must be unique"),
        ({"device": "cuda:3"}, r"--device must be a device this machine has: it sees \d+ CUDA GPU"),
        ({"device": "tpu"}, r"--device must be a torch device such as 'cpu' or 'cuda:0'"),
    ],
)
def test_type_and_range(change, message):
    with mock.patch("torch.cuda.is_available", return_value=False), pytest.raises(InputError, match=message):
        check_settings({**GOOD, **change})


def test_every_problem_is_listed_at_once():
    with pytest.raises(InputError, match=r"^3 problem\(s\) in the settings:"):
        check_settings({**GOOD, "max_epochs": 2.5, "overlap": 1.0, "sw_batch_size": 0})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kernel_size": [3, 3, 3]}, r"kernel_size and strides must have the same length.*kernel_size=\[3, 3, 3\]"),
        ({"warmup_epochs": 300}, r"warmup_epochs=300 is not before the last epoch"),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, r"must be below 1"),
        ({"patch_size": [512, 512, 512]}, r"needs about \d+\.\d GB for one training step"),
    ],
)
def test_relations_between_keys(change, message):
    with pytest.raises(InputError, match=message):
        check_settings({**GOOD, **change})


def test_the_training_step_is_checked_only_where_the_workflow_trains():
    huge = {**GOOD, "patch_size": [512, 512, 512], "sw_batch_size": 1}
    with mock.patch("bundle.settings.device_memory", return_value=64 * 2**30):
        with pytest.raises(InputError, match=r"for one training step"):
            check_settings(huge)
        with pytest.raises(InputError, match=r"for one sliding-window batch") as raised:
            check_settings({**huge, "for_training": False})
    assert "training step" not in str(raised.value)


def test_memory_estimate_refuses_what_does_not_fit_and_names_a_patch_that_does():
    with mock.patch("bundle.settings.device_memory", return_value=4 * 2**30):
        with pytest.raises(
            InputError, match=r"needs about 6.0 GB .* more than its 4.0 GB; lower patch_size \(e\.g\. \[96, 96, 96\]\)"
        ):
            check_settings({**GOOD, "patch_size": [128, 128, 128], "batch_size": 1, "num_samples": 1})
        check_settings({**GOOD, "patch_size": [96, 96, 96], "batch_size": 1, "num_samples": 1})


def _argv(*extra: str) -> list[str]:
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")]
    return ["monai.bundle", "run", "--config_file", repr(files), *extra]


def test_known_keys_nested_ids_and_run_arguments_pass():
    check_command_line(_argv("--max_epochs", "2", "--train::trainer::max_epochs", "2", "--meta_file", "m"))


@pytest.mark.parametrize(
    "option, message",
    [
        (["--max_epoch", "2"], r"unknown setting --max_epoch \(did you mean --max_epochs\?\)"),
        (["--lerning_rate=0.1"], r"unknown setting --lerning_rate \(did you mean --learning_rate\?\)"),
    ],
)
def test_a_typo_names_the_closest_key(option, message):
    with pytest.raises(InputError, match=message):
        check_command_line(_argv(*option))


def test_keys_of_an_args_file_are_known(tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"my_key": 1}))
    check_command_line(_argv("--args_file", str(args), "--my_key", "2"))


def test_started_from_python_nothing_is_checked():
    check_command_line(["pytest", "-q", "--anything"])
