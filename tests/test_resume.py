"""kill -9 of a training run leaves valid files, and the same command resumes from the latest checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import torch

from bundle.handlers import latest_checkpoint
from bundle.io import load_checkpoint, read_json
from tests.conftest import BUNDLE_ROOT, SUBPROCESS_ENV, TINY_OVERRIDES, TinyDatasetTestCase, fresh_metadata

MAX_EPOCHS, ELECT_EPOCH = 6, 4


class TestKillAndResume(TinyDatasetTestCase):
    def setUp(self):
        work = tempfile.TemporaryDirectory()
        self.addCleanup(work.cleanup)
        self.work = Path(work.name)
        fresh_metadata(self.work)
        settings = {
            **TINY_OVERRIDES,
            "max_epochs": MAX_EPOCHS,
            "elect_epoch": ELECT_EPOCH,
            "reelect_every": 0,
            "val_interval": 2,
            "log_every": 1,
            "dataset_dir": str(self.dataset),
            "datalist_file": str(self.work / "datalist.json"),
            "val_fraction": 0.5,  # a longer election, to land the kill inside it
            "ckpt_dir": str(self.work / "models"),
            "output_dir": str(self.work / "eval"),
            "metadata_file": str(self.work / "metadata.json"),
        }
        (self.work / "args.json").write_text(json.dumps(settings))

    def _run(self, kill_after: str | None) -> str:
        """Run the training command; SIGKILL it as soon as a line containing ``kill_after`` is printed."""
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json"]
        command += ["--args_file", str(self.work / "args.json")]
        process = subprocess.Popen(
            command, cwd=BUNDLE_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=SUBPROCESS_ENV
        )
        lines = []
        for line in process.stdout:
            lines.append(line)
            if kill_after is not None and kill_after in line:
                process.send_signal(signal.SIGKILL)
                break
        process.stdout.close()
        code = process.wait(timeout=300)
        output = "".join(lines)
        if kill_after is None:
            self.assertEqual(code, 0, output[-3000:])
        else:
            self.assertEqual(code, -signal.SIGKILL, f"the run ended before printing {kill_after!r}:\n{output[-3000:]}")
        return output

    def _assert_valid_files(self, epoch: int) -> dict:
        latest = latest_checkpoint(self.work / "models")
        self.assertEqual(latest.name, f"latest_checkpoint_epoch={epoch}.pt")
        checkpoint = load_checkpoint(latest)  # weights_only=True
        trainer = checkpoint["trainer"]
        self.assertEqual(trainer["iteration"] // trainer["epoch_length"], epoch)
        self.assertEqual(set(checkpoint), {"model", "optimizer", "lr_scheduler", "trainer", "lckd"})
        self.assertEqual(list(self.work.glob("models/*.tmp")) + list(self.work.glob("models/.*")), [])
        read_json(self.work / "metadata.json")  # valid JSON
        return checkpoint

    def test_kill_mid_epoch_and_mid_election_then_resume(self):
        # 1. killed in the middle of epoch 3: epoch 2's checkpoint is the latest and loads
        output = self._run(kill_after=f"Epoch: 3/{MAX_EPOCHS}, Iter: 1/")
        self.assertIn("Saved checkpoint at epoch: 2", output)
        checkpoint = self._assert_valid_files(epoch=2)
        self.assertEqual(checkpoint["lckd"], {})

        # 2. the same command resumes at epoch 3 (no epoch 1 or 2 again); killed inside the election of epoch 4
        output = self._run(kill_after=f"teacher election at epoch {ELECT_EPOCH}: validating")
        self.assertIn("resuming from", output)
        self.assertIn("latest_checkpoint_epoch=2.pt (epoch 2", output)
        self.assertNotIn(f"Epoch: 1/{MAX_EPOCHS}", output)
        self.assertNotIn(f"Epoch: 2/{MAX_EPOCHS}", output)
        self.assertIn(f"Epoch: 3/{MAX_EPOCHS}", output)
        self.assertNotIn(f"teacher election at epoch {ELECT_EPOCH} on", output)  # the kill landed inside it
        self._assert_valid_files(epoch=3)
        self.assertNotIn("lckd", read_json(self.work / "metadata.json"))

        # 3. resumes at epoch 4, elects, finishes; optimizer and scheduler state carried over
        before = load_checkpoint(latest_checkpoint(self.work / "models"))
        output = self._run(kill_after=None)
        self.assertIn("latest_checkpoint_epoch=3.pt (epoch 3", output)
        self.assertNotIn(f"Epoch: 3/{MAX_EPOCHS}", output)
        self.assertIn(f"teacher election at epoch {ELECT_EPOCH} on", output)
        final = self._assert_valid_files(epoch=MAX_EPOCHS)
        self.assertEqual(final["lr_scheduler"]["last_epoch"], MAX_EPOCHS)
        self.assertGreater(final["optimizer"]["state"][0]["step"], before["optimizer"]["state"][0]["step"])
        teachers = read_json(self.work / "metadata.json")["lckd"]["teachers"]
        self.assertEqual(final["lckd"]["teachers"], teachers)
        self.assertEqual(final["lckd"]["elected_at"]["epoch"], ELECT_EPOCH)
        best = load_checkpoint(self.work / "models" / "model.pt")
        self.assertIn("checkpointer", best)  # the best metric survives a restart

        # 4. a finished run re-run does not train again
        output = self._run(kill_after=None)
        self.assertNotIn(f"Epoch: {MAX_EPOCHS}/{MAX_EPOCHS}, Iter", output)
        self.assertTrue(
            torch.equal(
                load_checkpoint(latest_checkpoint(self.work / "models"))["model"][next(iter(final["model"]))],
                next(iter(final["model"].values())),
            )
        )


if __name__ == "__main__":
    unittest.main()
