"""configs/multi_gpu_train.json under torchrun: two CPU processes (gloo), one tiny epoch with an election."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
import torch

from bundle.networks import read_record
from tests.helpers import BUNDLE_ROOT, CONFIGS, TinyDatasetTestCase, tiny_training

pytestmark = pytest.mark.slow  # whole workflows or subprocesses: `make test-fast` leaves them out

# a test-only extension: each process writes the teacher set it trains with
PROBE = {
    "+finalize": [
        "$bundle.io.atomic_write_json(@output_dir + f'/teachers_rank{torch.distributed.get_rank()}.json', "
        "@train::elector.teachers)"
    ]
}


class TestMultiProcessTraining(TinyDatasetTestCase):
    def test_two_gloo_processes_share_one_checkpoint_and_one_teacher_set(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "probe.json").write_text(json.dumps(PROBE))
            settings = tiny_training(work, self.dataset, epochs=1)
            (work / "args.json").write_text(json.dumps(settings))
            configs = f"['configs/train.json','{work / 'probe.json'}','configs/multi_gpu_train.json']"
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                "--log-dir",
                str(work / "logs"),
                "--redirects",
                "3",
                "-m",
                "monai.bundle",
                "run",
                "--config_file",
                configs,
                "--meta_file",
                str(work / "metadata.json"),
                "--logging_file",
                str(CONFIGS / "logging.conf"),
                "--args_file",
                str(work / "args.json"),
            ]
            result = subprocess.run(command, cwd=BUNDLE_ROOT, capture_output=True, text=True, timeout=600)
            logs = {int(p.parent.name): p.read_text() for p in (work / "logs").rglob("stdout.log")}
            errors = "".join(p.read_text()[-3000:] for p in (work / "logs").rglob("stderr.log"))
            self.assertEqual(result.returncode, 0, result.stderr[-3000:] + errors)

            # one set of checkpoints, written by process 0 (which holds the folder's lock), with the plain weights
            saved = sorted(p.name for p in (work / "models").iterdir() if p.name != ".lock")
            self.assertEqual(saved, ["latest_checkpoint_epoch=1.pt", "model.pt"])
            latest = torch.load(work / "models" / saved[0], weights_only=True)
            self.assertFalse(any(key.startswith("module.") for key in latest["model"]))

            # one teacher set: elected from both processes' validation cases, the same in every process
            election = json.loads((work / "metadata.json").read_text())["lckd"]
            self.assertEqual(election["cases"], len(json.loads((work / "datalist.json").read_text())["validation"]))
            self.assertEqual(election["cases"], 2)  # one case per process, gathered
            per_process = [json.loads((work / "eval" / f"teachers_rank{r}.json").read_text()) for r in (0, 1)]
            self.assertEqual(per_process, [election["teachers"]] * 2)
            self.assertEqual(read_record(work / "models" / saved[0])["teachers"], election["teachers"])
            self.assertNotIn("teachers", latest["lckd"])  # one copy per file: the weights' record

            # only process 0 logs, once monai.bundle's input summary (printed before the process group exists) is over
            self.assertEqual(sorted(logs), [0, 1])
            self.assertIn("teacher election at epoch 1 on 2 validation cases", logs[0])
            self.assertIn("Epoch[1] Metrics", logs[0])
            self.assertIn("INFO - ---", logs[1])
            self.assertNotIn("INFO", logs[1].rsplit("INFO - ---", 1)[1])
