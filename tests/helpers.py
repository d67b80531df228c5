"""What the tests share: the tiny profile's settings, running a workflow or inference, tiny checkpoints (fixtures
live in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import unittest
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export

from bundle.metadata import metadata_without_election
from bundle.networks import LCKDNet

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"

# Tiny-model overrides for any workflow config: configs/demo.json's CPU profile (32^3 patches, 4 levels)
# with narrower filters, one patch per case, no warm-up. MLflow tracking (on by default) is left to
# tests/test_tracking.py: a new SQLite store costs seconds.
DEMO_PROFILE = json.loads((CONFIGS / "demo.json").read_text())
TINY_OVERRIDES = {
    **{key: DEMO_PROFILE[key] for key in ("patch_size", "kernel_size", "strides", "batch_size", "num_workers")},
    "mlflow": False,
    "filters": [4, 8, 16, 32],
    "num_samples": 1,
    "sw_batch_size": 2,
    "warmup_epochs": 0,
}


# The same, for workflows without a training loader.
TINY_NETWORK = {k: v for k, v in TINY_OVERRIDES.items() if k not in ("batch_size", "num_samples", "warmup_epochs")}

# The keys that shape the network.
NETWORK_KEYS = {k: TINY_OVERRIDES[k] for k in ("filters", "kernel_size", "strides")}

# Threads per test process: the machine's two cores, or one each when pytest-xdist runs two workers (`make test`),
# so that no two torch processes ever contend for a core (which slows both tenfold).
THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"

# Environment of the bundle's commands run as subprocesses: as many threads as their test process, whose place
# they take while it waits.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS, "PYTHONUNBUFFERED": "1"}

# The same as a user's shell has it: without LCKD_TRACEBACK (a developer's switch for full tracebacks), so that the
# one-line errors the tests read are what a user sees.
USER_ENV = {k: v for k, v in SUBPROCESS_ENV.items() if k != "LCKD_TRACEBACK"}


def run_command(
    command: Sequence[str], cwd: Path = BUNDLE_ROOT, timeout: int = 600, env: dict | None = None, **options: Any
) -> subprocess.CompletedProcess:
    """``command`` as a user runs it, from ``cwd`` (the bundle root), its output captured as text, in :data:`USER_ENV`
    (or ``env``); ``options`` go to ``subprocess.run``."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=USER_ENV if env is None else env,
        **options,
    )


def monai_bundle(*arguments: str | Path, **options: Any) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <arguments>`` (``run --config_file ...``, ``ckpt_export ...``) through :func:`run_command`."""
    return run_command([sys.executable, "-m", "monai.bundle", *arguments], **options)


@contextlib.contextmanager
def locked_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A second process holding ``bundle.io.lock_folder(folder)`` while the block runs; killed after it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import bundle.io, time; bundle.io.lock_folder({str(folder)!r}); print('held', flush=True); time.sleep(300)",
        ],
        cwd=BUNDLE_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=SUBPROCESS_ENV,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def run_inference(
    settings: dict[str, Any], folder: Path, bundle_root: Path = BUNDLE_ROOT
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` of ``bundle_root``'s configs/inference.json with ``settings`` (written to
    ``folder/args.json``), from ``bundle_root`` with its own ``bundle`` code first on the path; asserts exit 0."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps(settings))
    run = monai_bundle(
        "run",
        "--config_file",
        "configs/inference.json",
        "--args_file",
        folder / "args.json",
        cwd=bundle_root,
        timeout=300,
        env={**SUBPROCESS_ENV, "PYTHONPATH": str(bundle_root)},
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run


def tiny_training(work: Path, dataset: Path, epochs: int) -> dict[str, Any]:
    """The settings of a tiny training of ``epochs`` epochs on ``dataset``, electing and validating at the last one,
    writing everything under ``work`` (its split, models, outputs and a :func:`fresh_metadata` copy)."""
    return {
        **TINY_OVERRIDES,
        **{"max_epochs": epochs, "elect_epoch": epochs, "val_interval": epochs, "dataset_dir": str(dataset)},
        **{"datalist_file": str(work / "datalist.json"), "ckpt_dir": str(work / "models")},
        **{"output_dir": str(work / "eval"), "metadata_file": str(fresh_metadata(work))},
    }


def fresh_metadata(folder: Path) -> Path:
    """``folder/metadata.json``: the bundle's metadata.json as shipped, without the teacher set a run may have added.

    The checkout's own file gains an ``lckd`` block whenever a training elects (``make demo`` does), so
    tests take this copy and never depend on, or write into, what a demo or a user left there.
    """
    return metadata_without_election(Path(folder) / "metadata.json")


def run_workflow(
    config: str | Sequence[str],
    workflow_type: str | None = None,
    keep: Sequence[str] = (),
    meta_file: Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """initialize -> (check_properties) -> run -> finalize a bundle config, as ``monai.bundle run`` does.

    Runs from the bundle root, as the README's commands do.

    Args:
        config: config file name(s) under configs/.
        workflow_type: "train" or "infer" to check the model-zoo properties, None to skip the check.
        keep: config ids whose parsed objects to return, read before finalize.
        meta_file: metadata.json to read; default: a :func:`fresh_metadata` copy, which is also the
            ``metadata_file`` key unless ``overrides`` set it.
        overrides: config keys to set.

    Returns:
        ``{id: object}`` for ``keep``.
    """
    files = [str(CONFIGS / name) for name in ([config] if isinstance(config, str) else config)]
    cwd = os.getcwd()
    scratch = tempfile.TemporaryDirectory()
    if meta_file is None:
        meta_file = fresh_metadata(Path(scratch.name))
        overrides.setdefault("metadata_file", str(meta_file))
    os.chdir(BUNDLE_ROOT)
    try:
        workflow = ConfigWorkflow(
            config_file=files,
            meta_file=str(meta_file),
            logging_file=str(CONFIGS / "logging.conf"),
            workflow_type=workflow_type,
            bundle_root=str(BUNDLE_ROOT),
            **overrides,
        )
        workflow.initialize()
        if workflow_type is not None:
            missing = workflow.check_properties()
            assert not missing, f"{config} lacks required properties {missing}"
        workflow.run()
        kept = {key: workflow.parser.get_parsed_content(key) for key in keep}
        workflow.finalize()
    finally:
        os.chdir(cwd)
        scratch.cleanup()
    return kept


def stacked_case(case_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A BraTS 2018-2021 layout case as one ``(H, W, D, 4)`` float32 array and its affine.

    Absent sequences are all-zero channels, as in 4-channel data (MSD Task01, MONAI Label, MONAI Deploy).
    """
    seg = nib.load(case_dir / f"{case_dir.name}_seg.nii.gz")
    channels = []
    for modality in ("flair", "t1", "t1ce", "t2"):
        path = case_dir / f"{case_dir.name}_{modality}.nii.gz"
        channels.append(
            nib.load(path).get_fdata(dtype=np.float32) if path.exists() else np.zeros(seg.shape, np.float32)
        )
    return np.stack(channels, axis=-1), seg.affine


def tiny_checkpoint(path: Path, preprocessing: dict | None = None) -> LCKDNet:
    """Save an untrained network of the tiny settings as a plain ``state_dict`` (as ``models/model.pt``) and return it;
    ``preprocessing`` goes into its record, as a training puts it there."""
    torch.manual_seed(0)
    net = LCKDNet(
        filters=TINY_OVERRIDES["filters"],
        kernel_size=TINY_OVERRIDES["kernel_size"],
        strides=TINY_OVERRIDES["strides"],
        preprocessing=preprocessing,
    )
    torch.save(net.state_dict(), path)
    return net


def tiny_torchscript(folder: Path, preprocessing: dict | None = None) -> tuple[LCKDNet, Path]:
    """An untrained tiny network (``folder/model.pt``) exported with ``monai.bundle ckpt_export`` to ``folder/model.ts``.

    The export embeds configs/metadata.json and configs/inference.json, as the README's command does; with
    ``preprocessing``, the model's record and the metadata's ``lckd`` block hold it, as after a training.
    """
    net = tiny_checkpoint(folder / "model.pt", preprocessing)
    metadata = fresh_metadata(folder)
    if preprocessing:
        content = json.loads(metadata.read_text())
        content["lckd"] = {"preprocessing": preprocessing}
        metadata.write_text(json.dumps(content))
    ckpt_export(
        "network_def",
        filepath=str(folder / "model.ts"),
        ckpt_file=str(folder / "model.pt"),
        meta_file=str(metadata),
        config_file=str(CONFIGS / "inference.json"),
        ckpt_path=str(folder / "model.pt"),  # network_def is built from this file's record
    )
    return net, folder / "model.ts"


class TinyDatasetTestCase(unittest.TestCase):
    """A unittest case that gets the session's tiny dataset as ``self.dataset``."""

    @pytest.fixture(autouse=True)
    def _bind_tiny_dataset(self, tiny_dataset):
        self.dataset = tiny_dataset
