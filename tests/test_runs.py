"""What a workflow does before its engine runs (bundle/runs.py): the order of the checks and set-up, and a stopped
training resumed or set aside."""

from __future__ import annotations

from unittest import mock

import pytest
from ignite.engine import Engine

from bundle.errors import InputError
from bundle.runs import begin_run, is_first_process, start_training

GOOD = {"max_epochs": 2, "elect_epoch": 1, "modalities": ["flair", "t1", "t1ce", "t2"], "device": "cpu"}


@pytest.mark.parametrize("distributed, starts_group", [("false", False), ("0", False), (False, False), ("yes", True)])
def test_the_process_group_starts_only_when_distributed_reads_true(tmp_path, distributed, starts_group):
    with mock.patch("bundle.runs.init_distributed") as init:
        begin_run([tmp_path / "out"], distributed=distributed, seed=None, settings=GOOD)
    assert init.called == starts_group
    assert (tmp_path / "out").is_dir()


def test_settings_are_refused_before_the_metadata_or_the_lock_are_touched(tmp_path):
    calls = []
    with (
        mock.patch("bundle.runs.read_metadata", side_effect=lambda *a, **k: calls.append("metadata")),
        mock.patch("bundle.runs.lock_folder", side_effect=lambda *a: calls.append("lock")),
        pytest.raises(InputError, match=r"elect_epoch=3 is after the last epoch"),
    ):
        begin_run([], tmp_path / "metadata.json", lock=tmp_path, seed=None, settings={**GOOD, "elect_epoch": 3})
    assert calls == []


def test_the_order_of_a_good_start(tmp_path):
    calls = []
    with (
        mock.patch("bundle.runs.check_settings", side_effect=lambda *a, **k: calls.append("settings")),
        mock.patch("bundle.runs.read_metadata", side_effect=lambda *a, **k: calls.append("metadata")),
        mock.patch("bundle.runs.lock_folder", side_effect=lambda *a: calls.append("lock")),
        mock.patch("bundle.runs.set_determinism", side_effect=lambda **k: calls.append(f"seed {k['seed']}")),
    ):
        begin_run([], tmp_path / "metadata.json", lock=tmp_path, seed=7, settings=GOOD)
    assert calls == ["settings", "metadata", "lock", "seed 7"]
    assert is_first_process()


@pytest.mark.parametrize("resume, resumed, set_aside", [(True, True, False), ("false", False, True)])
def test_a_training_resumes_or_sets_the_earlier_run_aside(tmp_path, resume, resumed, set_aside):
    trainer, loss, saver = Engine(lambda e, b: None), mock.Mock(), mock.Mock(save_dict={"model": None})
    with mock.patch("bundle.runs.resume_from_latest") as resume_call, mock.patch("bundle.runs.set_aside") as aside_call:
        start_training(trainer, loss, saver, tmp_path, resume=resume)
    loss.attach.assert_called_once_with(trainer)
    saver.attach.assert_called_once_with(trainer)
    assert (resume_call.called, aside_call.called) == (resumed, set_aside)
    if resumed:
        resume_call.assert_called_once_with(trainer, tmp_path, {"model": None}, latest_saver=saver)
