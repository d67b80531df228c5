"""kill -9 of a training run leaves valid files, and the same command resumes from the latest checkpoint."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import pytest
import torch

from bundle.errors import input_error_of
from bundle.handlers import latest_checkpoint
from bundle.io import atomic_write, read_json
from bundle.networks import load_checkpoint, read_record
from tests.helpers import (
    BUNDLE_ROOT,
    SUBPROCESS_ENV,
    TINY_OVERRIDES,
    TinyDatasetTestCase,
    fresh_metadata,
    monai_bundle,
    run_command,
    run_workflow,
    tiny_training,
)

pytestmark = pytest.mark.slow  # whole workflows or subprocesses: `make test-fast` leaves them out

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
        self.assertEqual(set(checkpoint), {"model", "optimizer", "lr_scheduler", "trainer", "lckd", "best_checkpoint"})
        leftovers = [p.name for p in self.work.glob("models/.*") if p.name != ".lock"]  # the run's lock file stays
        self.assertEqual(list(self.work.glob("models/*.tmp")) + leftovers, [])
        read_json(self.work / "metadata.json")  # valid JSON
        return checkpoint

    def test_kill_mid_epoch_and_mid_election_then_resume(self):
        # 1. killed in the middle of epoch 3: epoch 2's checkpoint is the latest and loads
        output = self._run(kill_after=f"Epoch: 3/{MAX_EPOCHS}, Iter: 1/")
        self.assertIn("Saved checkpoint at epoch: 2", output)
        checkpoint = self._assert_valid_files(epoch=2)
        self.assertIsNone(read_record(latest_checkpoint(self.work / "models"))["teachers"])  # no election yet
        self.assertEqual(checkpoint["lckd"]["model_election"]["model"]["epoch"], 2)

        # 2. the same command resumes at epoch 3 (no epoch 1 or 2 again); killed inside the election of epoch 4
        output = self._run(kill_after=f"teacher election at epoch {ELECT_EPOCH}: validating")
        self.assertIn("resuming from", output)
        self.assertIn("latest_checkpoint_epoch=2.pt (epoch 2", output)
        self.assertNotIn(f"Epoch: 1/{MAX_EPOCHS}", output)
        self.assertNotIn(f"Epoch: 2/{MAX_EPOCHS}", output)
        self.assertIn(f"Epoch: 3/{MAX_EPOCHS}", output)
        self.assertNotIn(f"teacher election at epoch {ELECT_EPOCH} on", output)  # the kill landed inside it
        self._assert_valid_files(epoch=3)
        self.assertIsNone(read_json(self.work / "metadata.json")["lckd"]["teachers"])  # epoch 2's model: none yet

        # 3. resumes at epoch 4, elects, finishes; optimizer and scheduler state carried over
        before = load_checkpoint(latest_checkpoint(self.work / "models"))
        output = self._run(kill_after=None)
        self.assertIn("latest_checkpoint_epoch=3.pt (epoch 3", output)
        self.assertNotIn(f"Epoch: 3/{MAX_EPOCHS}", output)
        self.assertIn(f"teacher election at epoch {ELECT_EPOCH} on", output)
        final = self._assert_valid_files(epoch=MAX_EPOCHS)
        self.assertEqual(final["lr_scheduler"]["last_epoch"], MAX_EPOCHS)
        self.assertGreater(final["optimizer"]["state"][0]["step"], before["optimizer"]["state"][0]["step"])
        block = read_json(self.work / "metadata.json")["lckd"]
        # one teacher set: metadata.json names the teachers of the weights in model.pt; the election beside them
        self.assertEqual(read_record(self.work / "models" / "model.pt")["teachers"], block["teachers"])
        self.assertEqual(block["model"]["epoch"], final["lckd"]["model_election"]["model"]["epoch"])
        election = block.get("last_election", block)
        latest_teachers = read_record(latest_checkpoint(self.work / "models"))["teachers"]
        self.assertNotIn("teachers", final["lckd"])  # one copy per file: the weights' record
        self.assertEqual(latest_teachers, election["teachers"])
        self.assertEqual(election["elected_at"]["epoch"], ELECT_EPOCH)
        self.assertEqual("last_election" in block, block["teachers"] != latest_teachers)
        self.assertTrue(final["best_checkpoint"]["_saved"])  # the best metric survives a restart

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


class TestCheckpointWrites(TinyDatasetTestCase):
    """Ignite asks to delete the replaced checkpoint before writing the new one; the bundle's saver waits."""

    def _settings(self, work: Path) -> dict:
        return tiny_training(work, self.dataset, epochs=2)

    def test_full_disk_keeps_the_previous_checkpoint(self):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)

            def no_space_for_epoch_2(path, writer):
                if "epoch=2" in str(path):
                    raise OSError(errno.ENOSPC, "No space left on device")
                return atomic_write(path, writer)

            with mock.patch("bundle.handlers.checkpoint.atomic_write", no_space_for_epoch_2):
                with self.assertRaises(Exception) as raised:
                    run_workflow("train.json", meta_file=work / "metadata.json", **self._settings(work))
            self.assertIn("the previous checkpoint is kept", str(input_error_of(raised.exception)))
            kept = sorted(p.name for p in (work / "models").iterdir())
            self.assertIn("latest_checkpoint_epoch=1.pt", kept)
            trainer = load_checkpoint(work / "models" / "latest_checkpoint_epoch=1.pt")["trainer"]
            self.assertEqual(trainer["iteration"] // trainer["epoch_length"], 1)

    def test_kill_between_writing_and_deleting_then_resume(self):
        """SIGKILL at the moment the replaced checkpoint is deleted: both files are valid, the rerun takes the newest."""
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            settings = {**self._settings(work), "max_epochs": 3, "elect_epoch": 3, "val_interval": 3}
            (work / "args.json").write_text(json.dumps(settings))
            killer = (
                "import os, pathlib, signal, sys\n"
                "unlink = pathlib.Path.unlink\n"
                "def dying_unlink(self, *a, **k):\n"
                "    if self.name == 'latest_checkpoint_epoch=1.pt':\n"
                "        os.kill(os.getpid(), signal.SIGKILL)\n"
                "    return unlink(self, *a, **k)\n"
                "pathlib.Path.unlink = dying_unlink\n"
                "from monai.bundle.scripts import run\n"
                "run(config_file='configs/train.json', args_file=sys.argv[1])\n"
            )
            died = run_command([sys.executable, "-c", killer, work / "args.json"], env=SUBPROCESS_ENV, timeout=300)
            self.assertEqual(died.returncode, -signal.SIGKILL, died.stderr[-2000:])
            names = sorted(p.name for p in (work / "models").glob("latest_*.pt"))
            self.assertEqual(names, ["latest_checkpoint_epoch=1.pt", "latest_checkpoint_epoch=2.pt"])
            for name in names:
                load_checkpoint(work / "models" / name)  # both whole
            resumed = monai_bundle(
                "run", "--config_file", "configs/train.json", "--args_file", work / "args.json", env=SUBPROCESS_ENV
            )
            self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
            self.assertIn("latest_checkpoint_epoch=2.pt (epoch 2", resumed.stdout + resumed.stderr)
            names = sorted(p.name for p in (work / "models").glob("latest_*.pt"))
            self.assertEqual(names, ["latest_checkpoint_epoch=3.pt"])
