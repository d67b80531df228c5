"""The model file (bundle/networks/model_file.py): read from disk once per version, hashed from the same bytes, the
network built and loaded from it, the weights saved back without losing a training checkpoint's other entries."""

from __future__ import annotations

import hashlib

import pytest
import torch

from bundle.errors import InputError
from bundle.networks import LCKDNet, load_checkpoint, load_network, model_sha256, read_record, save_weights
from bundle.networks.model_file import DISK_READS

FILTERS = (4, 8, 16, 32)


def _reads(path) -> int:
    return DISK_READS[str(path.resolve())]


def test_a_file_is_read_once_per_version_and_hashed_from_the_same_bytes(tmp_path):
    path = tmp_path / "model.pt"
    net = LCKDNet(filters=FILTERS)
    torch.save(net.state_dict(), path)
    first = load_checkpoint(path)
    first["extra"] = "changed"  # a caller's dict is its own
    assert "extra" not in load_checkpoint(path)
    assert read_record(path)["network"]["filters"] == list(FILTERS)
    assert model_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _reads(path) == 1
    save_weights(LCKDNet(filters=FILTERS), path)  # rewritten atomically: a new version, read again
    assert model_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _reads(path) == 2


def test_load_network_returns_the_network_with_the_files_record(tmp_path):
    path = tmp_path / "model.pt"
    trained = LCKDNet(filters=FILTERS)
    trained.record["teachers"] = {"ET": "t1ce", "TC": "t1ce", "WT": "flair"}
    torch.save(trained.state_dict(), path)
    fresh = LCKDNet(filters=FILTERS)
    assert load_network(fresh, path) is fresh
    assert fresh.record["teachers"] == trained.record["teachers"]
    for name, value in trained.state_dict().items():
        if name != "_extra_state":
            assert torch.equal(value, fresh.state_dict()[name]), name


def test_saving_into_a_training_checkpoint_replaces_only_its_weights(tmp_path):
    path = tmp_path / "latest.pt"
    torch.save({"model": LCKDNet(filters=FILTERS).state_dict(), "optimizer": {"step": 3}}, path)
    save_weights(LCKDNet(filters=FILTERS), path)
    assert load_checkpoint(path)["optimizer"] == {"step": 3}


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_an_unreadable_file_is_one_error_naming_it(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"model.pt is not a readable PyTorch checkpoint"):
        load_checkpoint(path)
