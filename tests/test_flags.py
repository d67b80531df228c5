"""Boolean settings as the command line hands them: "false" must mean false, "maybe" must be refused."""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from parameterized import parameterized

from bundle.networks import LCKDNet
from bundle.settings import flag
from tests.conftest import BUNDLE_ROOT, CONFIGS, SUBPROCESS_ENV, TINY_NETWORK, TINY_OVERRIDES, TinyDatasetTestCase

TINY = {k: v for k, v in TINY_NETWORK.items() if k != "mlflow"}


class TestFlag(unittest.TestCase):
    @parameterized.expand(
        [(v, True) for v in (True, 1, "true", "TRUE", "yes", "On", "1")]
        + [(v, False) for v in (False, 0, "false", "False", "no", "OFF", "0", " false ")]
    )
    def test_accepted(self, value, expected):
        self.assertIs(flag(value, "resume"), expected)

    @parameterized.expand([("maybe",), ("",), (2,), (None,), ("tru",)])
    def test_refused_with_the_key_and_the_allowed_values(self, value):
        with self.assertRaisesRegex(ValueError, r"--resume must be true or false \(also 1/0, yes/no, on/off\), got"):
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
    if item.endswith("]"):
        handlers, target = item[:-1].split("[")
        index = next(i for i, h in enumerate(parser[handlers]) if h["_target_"].endswith(target))
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
    ("train.json", "distributed", "initialize::0", lambda result: result is not None),
    ("inference.json", "shared_encoder", "network_def", lambda net: net.shared_encoder),
    ("inference.json", "amp", "evaluator::amp", bool),
    ("inference.json", "channels_last", "inference_network", lambda net: _channels_last(net)),
    ("evaluate.json", "hd95", "evaluate::evaluator::hd95", bool),
    ("evaluate.json", "lesion_wise", "evaluate::evaluator::lesion_wise", bool),
    ("evaluate.json", "compile", "inference_network", lambda net: not isinstance(net, LCKDNet)),
    ("evaluate.json", "mlflow", "evaluate::handlers[MLFlowHandler]", lambda disabled: not disabled),
    ("elect.json", "mlflow", "elect::handlers[TaggedMLFlowHandler]", lambda disabled: not disabled),
]


class TestBooleanKeysFromTheCommandLine(unittest.TestCase):
    @parameterized.expand([(f"{c}_{k}_{i.split('::')[-1].strip(']')}", c, k, i, r) for c, k, i, r in USE_SITES])
    def test_false_is_false(self, _, config, key, item, read):
        self.assertFalse(read(parsed(config, key, "false", item)), (config, key))
        if key not in ("distributed", "compile"):  # true would start a process group / torch.compile
            self.assertTrue(read(parsed(config, key, "True", item)), (config, key))


class TestBooleanKeysThroughMonaiBundleRun(TinyDatasetTestCase):
    def _train(self, work: Path, *extra: str) -> subprocess.CompletedProcess:
        settings = {**TINY_OVERRIDES, "max_epochs": 1, "elect_epoch": 1, "val_interval": 1, "dataset_dir": str(self.dataset),
                    "datalist_file": str(work / "datalist.json"), "ckpt_dir": str(work / "models"),
                    "output_dir": str(work / "eval"), "metadata_file": str(work / "metadata.json")}  # fmt: skip
        (work / "args.json").write_text(json.dumps(settings))
        (work / "metadata.json").write_text((CONFIGS / "metadata.json").read_text())
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json"]
        return subprocess.run(
            [*command, "--args_file", str(work / "args.json"), *extra],
            cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV,
        )  # fmt: skip

    def test_resume_false_starts_over_and_a_typo_is_one_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            first = self._train(work)
            self.assertEqual(first.returncode, 0, first.stderr[-2000:])
            again = self._train(work, "--resume", "false", "--shared_encoder", "false", "--mlflow", "FALSE")
            self.assertEqual(again.returncode, 0, again.stderr[-2000:])
            output = again.stdout + again.stderr
            self.assertNotIn("latest_checkpoint_epoch=1.pt (epoch 1", output)  # the resume message of a resumed run
            self.assertIn("SupervisedTrainer - INFO - Epoch[1] Complete", output)  # trained again from epoch 1
            self.assertFalse((work / "eval" / "mlruns.db").exists())
            weights = torch.load(work / "models" / "model.pt", weights_only=True)
            self.assertTrue(any(key.startswith("encoders.3.") for key in weights))  # one encoder per sequence
            typo = self._train(work, "--resume", "maybe")
            self.assertNotEqual(typo.returncode, 0)
            self.assertIn("--resume must be true or false (also 1/0, yes/no, on/off); got 'maybe'", typo.stderr)
            self.assertNotIn("Traceback", typo.stderr)


if __name__ == "__main__":
    unittest.main()
