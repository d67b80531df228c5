"""Boolean settings as the command line hands them: "false" must mean false, "maybe" must be refused."""

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data import load_datalist
from bundle.engines import CombinationEvaluator
from bundle.networks import LCKDNet
from bundle.settings import flag
from tests.helpers import BUNDLE_ROOT, CONFIGS, NETWORK_KEYS, TINY_NETWORK

TINY = {k: v for k, v in TINY_NETWORK.items() if k != "mlflow"}


@pytest.mark.parametrize(
    "value, expected",
    [(v, True) for v in (True, 1, "true", "TRUE", "yes", "On", "1")]
    + [(v, False) for v in (False, 0, "false", "False", "no", "OFF", "0", " false ")],
)
def test_accepted(value, expected):
    assert flag(value, "resume") is expected


@pytest.mark.parametrize("value", ["maybe", "", 2, None, "tru"])
def test_refused_with_the_key_and_the_allowed_values(value):
    with pytest.raises(ValueError, match=r"--resume must be true or false \(also 1/0, yes/no, on/off\), got"):
        flag(value, "resume")


def parsed(config: str, key: str, value: str, item: str):
    """The value of config item ``item`` when ``key`` is given as the string ``value`` (as the command line does).

    ``item`` may name a handler list and a handler class, ``"train::handlers[MLFlowHandler]"``: its ``_disabled_``.
    """
    parser = ConfigParser()
    overrides = ["evaluate.json", "elect.json"]  # merged over train.json
    parser.read_config([str(CONFIGS / name) for name in (["train.json"] if config in overrides else []) + [config]])
    # no trained model: network_def is built from the config keys, not from a model.pt a demo left in the checkout
    parser.update({**TINY, "bundle_root": str(BUNDLE_ROOT), "ckpt_path": "/nonexistent/model.pt", key: value})
    parser["network"] = "$@network_def"  # untrained: the workflows that load model.pt into it would need one
    if item.endswith("]"):
        handlers, target = item[:-1].split("[")
        index = next(
            i for i, h in enumerate(parser[handlers]) if isinstance(h, dict) and h["_target_"].endswith(target)
        )
        item = f"{handlers}::{index}::_disabled_"
    return parser.get_parsed_content(item)


def _channels_last(network: torch.nn.Module) -> bool:
    weight = next(p for p in network.parameters() if p.dim() == 5 and p.shape[1] > 1 and p.shape[2] > 1)
    return weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()


# (config, key, config item that reads it, how to read the item's value)
USE_SITES = [
    ("train.json", "mlflow", "train::handlers[MLFlowHandler]", lambda disabled: not disabled),
    ("train.json", "mlflow", "validate::handlers[MLFlowHandler]", lambda disabled: not disabled),
    ("train.json", "shared_encoder", "network_def", lambda net: net.shared_encoder),
    ("train.json", "amp", "train::trainer::amp", bool),
    ("inference.json", "shared_encoder", "network_def", lambda net: net.shared_encoder),
    ("inference.json", "amp", "evaluator::amp", bool),
    ("inference.json", "channels_last", "inference_network", lambda net: _channels_last(net)),
    ("evaluate.json", "compile", "inference_network", lambda net: not isinstance(net, LCKDNet)),
    ("evaluate.json", "mlflow", "evaluate::handlers[MLFlowHandler]", lambda disabled: not disabled),
    ("elect.json", "mlflow", "elect::handlers[TaggedMLFlowHandler]", lambda disabled: not disabled),
]


@pytest.mark.parametrize("text, expected", [("false", False), ("True", True)])
def test_the_evaluator_reads_its_switches_strictly(tmp_path, text, expected):
    evaluator = CombinationEvaluator(
        torch.nn.Identity(), [], None, ["flair", "t1"], tmp_path, to_labels=dict, hd95=text, amp=text, lesion_wise=text
    )
    assert (evaluator.hd95, evaluator.amp, evaluator.lesion_wise) == (expected,) * 3


def test_the_network_and_the_split_read_their_switches_strictly(tmp_path):
    assert LCKDNet(**NETWORK_KEYS, shared_encoder="false").shared_encoder is False
    with pytest.raises(ValueError, match=r"--allow_split_overlap must be true or false"):
        load_datalist(tmp_path, allow_split_overlap="maybe")


@pytest.mark.parametrize("config, key, item, read", USE_SITES, ids=[f"{c}-{k}-{i}" for c, k, i, _ in USE_SITES])
def test_false_from_the_command_line_is_false(config, key, item, read):
    assert not read(parsed(config, key, "false", item))
    if key != "compile":  # true would run torch.compile
        assert read(parsed(config, key, "True", item))
