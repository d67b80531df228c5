"""The federated LCKD job folder (``jobs/lckd_fedavg``) and copies of it with other settings.

The server's arguments (``config_fed_server.json``) and the sites' script arguments (``config_fed_client.json``)
share settings (rounds, config files); :func:`configure_job` sets each in both places, so they cannot disagree.
``python -m bundle.federated.job --out jobs/my_run --num_rounds 50`` writes such a copy, to run with
``nvflare simulator jobs/my_run -w <workspace> -n <sites> -t <sites>`` or to submit to a real deployment.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bundle import BUNDLE_ROOT
from bundle.errors import InputError, install_excepthook

__all__ = ["JOB_DIR", "SERVER_SETTINGS", "SITE_SETTINGS", "job_settings", "configure_job", "main"]

JOB_DIR = BUNDLE_ROOT / "jobs" / "lckd_fedavg"
SERVER_SETTINGS = ("num_clients", "num_rounds", "configs", "elect_round", "reelect_every", "ckpt_dir", "metadata_file")
"""Arguments of :class:`~bundle.federated.controller.LCKDFedAvg` a job sets."""
SITE_SETTINGS = ("num_rounds", "configs", "dataset_root", "local_epochs", "threads")
"""Arguments of :func:`bundle.federated.site.main` a job sets."""
_SERVER_FILE = Path("app/config/config_fed_server.json")
_CLIENT_FILE = Path("app/config/config_fed_client.json")


def _read(job_dir: Path) -> tuple[dict, dict, dict]:
    return tuple(json.loads((job_dir / name).read_text()) for name in ("meta.json", _SERVER_FILE, _CLIENT_FILE))


def _site_args(client: dict) -> dict[str, Any]:
    tokens = shlex.split(client["executors"][0]["executor"]["args"]["task_script_args"])
    settings: dict[str, Any] = {}
    key = None
    for token in tokens:
        if token.startswith("--"):
            key = token[2:]
            settings[key] = []
        elif key is not None:
            settings[key].append(token)
    return {k: v if k == "configs" else (v[0] if v else None) for k, v in settings.items()}


def job_settings(job_dir: str | Path = JOB_DIR) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(server arguments, site script arguments)`` of a job folder (script arguments as strings)."""
    _, server, client = _read(Path(job_dir))
    return dict(server["workflows"][0]["args"]), _site_args(client)


def configure_job(out_dir: str | Path, job_dir: str | Path = JOB_DIR, **settings: Any) -> Path:
    """Copy the job folder ``job_dir`` to ``out_dir`` with ``settings`` changed, in the server's and the sites' files.

    Args:
        out_dir: the new job folder (must not exist).
        job_dir: the job to copy; default ``jobs/lckd_fedavg``.
        settings: any of :data:`SERVER_SETTINGS` and :data:`SITE_SETTINGS`; ``num_clients`` is also the job's
            ``min_clients``.

    Returns:
        ``out_dir``.

    Raises:
        InputError: for an unknown setting, an existing ``out_dir``, or a ``dataset_root`` without a folder for each
            of the ``num_clients`` sites (``site-1`` ...).
    """
    unknown = sorted(set(settings) - set(SERVER_SETTINGS) - set(SITE_SETTINGS))
    if unknown:
        raise InputError(
            f"unknown job settings {unknown}; allowed: {sorted(set(SERVER_SETTINGS) | set(SITE_SETTINGS))}."
        )
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists; choose a new folder for the job (nothing was written).")
    meta, server, client = _read(Path(job_dir))
    root = settings.get("dataset_root")
    if root:
        sites = int(settings.get("num_clients", meta.get("min_clients", 0)))
        missing = [f"site-{k}" for k in range(1, sites + 1) if not (Path(root) / f"site-{k}").is_dir()]
        if missing:
            raise InputError(
                f"dataset_root {root} has no folder for {', '.join(missing)}: each site reads <dataset_root>/<its "
                f"name> (the simulator names them site-1 ... site-{sites}); add the folders or fix --dataset_root "
                "(nothing was written)."
            )
    server_args = server["workflows"][0]["args"]
    site_args = _site_args(client)
    for key, value in settings.items():
        if key in SERVER_SETTINGS:
            server_args[key] = list(value) if key == "configs" else value
        if key in SITE_SETTINGS:
            site_args[key] = [str(v) for v in value] if key == "configs" else str(value)
    if "num_clients" in settings:
        meta["min_clients"] = int(settings["num_clients"])
    client["executors"][0]["executor"]["args"]["task_script_args"] = " ".join(
        f"--{key} {' '.join(map(shlex.quote, value)) if isinstance(value, list) else shlex.quote(value)}"
        for key, value in site_args.items()
    )
    shutil.copytree(job_dir, out_dir)
    for name, content in (("meta.json", meta), (_SERVER_FILE, server), (_CLIENT_FILE, client)):
        (out_dir / name).write_text(json.dumps(content, indent=4) + "\n")
    return out_dir


def main(argv: Sequence[str] | None = None) -> None:
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the new job folder")
    parser.add_argument("--job", default=str(JOB_DIR), help="the job to copy")
    parser.add_argument("--num_clients", type=int)
    parser.add_argument("--num_rounds", type=int)
    parser.add_argument("--local_epochs", type=int)
    parser.add_argument("--elect_round", type=int)
    parser.add_argument("--reelect_every", type=int)
    parser.add_argument("--configs", nargs="+", help="bundle config files the sites train with, relative to the bundle")
    parser.add_argument("--dataset_root", help="one dataset folder per site, named after the site")
    parser.add_argument("--threads", type=int, help="torch threads per site")
    parser.add_argument("--ckpt_dir", help="where the server writes the global model.pt")
    parser.add_argument("--metadata_file", help="the metadata.json the server writes the election into")
    args = vars(parser.parse_args(argv))
    out, job = args.pop("out"), args.pop("job")
    configure_job(out, job, **{key: value for key, value in args.items() if value is not None})
    print(f"job written to {out}; run it with: nvflare simulator {out} -w <workspace> -n <sites> -t <sites>")


if __name__ == "__main__":
    main()
