"""Run model-zoo's own CI check (``ci/verify_bundle.py``) on a package made by ``lckd-package``.

    python scripts/verify_with_model_zoo.py --package dist/lckd_brats_0.2.0.zip --trusted-keys keys/site-a.pub \\
        --model-zoo /path/to/Project-MONAI/model-zoo --schema /path/to/meta_schema_20240725.json

The package is unpacked, its signature and hashes checked first (``bundle.packaging.verify_package``) into
``<work>/models/lckd_brats``, laid out as model-zoo's CI expects it: the schema as ``eval/schema.json`` (what
model-zoo's ``prepare_schema`` would download) and an empty ``models/model_info.json`` (no earlier version of
this bundle in the zoo). Then ``verify_bundle.py`` runs in each ``--modes`` (default ``min`` and ``full``) from
model-zoo's ``ci`` folder; its output is printed, and the exit code is non-zero if any mode fails. Nothing of
model-zoo is copied into this repository: pass the location of a checkout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bundle.errors import InputError, InputFileError, install_excepthook
from bundle.packaging import verify_package

BUNDLE_NAME = "lckd_brats"


def main() -> None:
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", required=True, help="a zip made by lckd-package pack")
    parser.add_argument(
        "--trusted-keys", nargs="+", required=True, help="public keys of the publishers this site trusts"
    )
    parser.add_argument("--model-zoo", required=True, help="a checkout of Project-MONAI/model-zoo (its ci/ folder)")
    parser.add_argument("--schema", required=True, help="meta_schema_20240725.json (the schema metadata.json names)")
    parser.add_argument("--modes", nargs="+", default=["min", "full"], choices=["min", "full", "regular"])
    parser.add_argument("--work", help="folder to lay the bundle out in (default: a new temporary folder)")
    args = parser.parse_args()
    ci = Path(args.model_zoo) / "ci"
    if not (ci / "verify_bundle.py").is_file():
        raise InputFileError(f"{ci / 'verify_bundle.py'} does not exist; --model-zoo must be a model-zoo checkout.")
    if not Path(args.schema).is_file():
        raise InputFileError(f"{args.schema} does not exist; --schema must be the metadata schema file.")
    work = Path(args.work or tempfile.mkdtemp(prefix="lckd_model_zoo_"))
    models = work / "models"
    bundle = verify_package(args.package, models / BUNDLE_NAME, args.trusted_keys, args.schema)
    (bundle / "eval").mkdir(exist_ok=True)
    shutil.copy(args.schema, bundle / "eval" / "schema.json")
    (models / "model_info.json").write_text(json.dumps({}))
    failed = []
    for mode in args.modes:
        print(f"== model-zoo ci/verify_bundle.py -b {BUNDLE_NAME} -m {mode}", flush=True)
        run = subprocess.run(
            [sys.executable, "verify_bundle.py", "-b", BUNDLE_NAME, "-p", str(models), "-m", mode], cwd=ci
        )
        if run.returncode != 0:
            failed.append(mode)
    if failed:
        raise InputError(f"model-zoo's verify_bundle.py failed in mode(s) {failed} on {args.package} (output above).")
    print(f"model-zoo's verify_bundle.py passed in mode(s) {args.modes} on {args.package} (laid out in {bundle}).")


if __name__ == "__main__":
    main()
