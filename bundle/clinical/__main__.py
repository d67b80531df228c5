"""``lckd-clinical <study folder> --output <folder>`` (or ``python -m bundle.clinical``): one study from DICOM (or NIfTI) to label maps in
its own space, a DICOM SEG, QC images and a report (:func:`bundle.clinical.pipeline.segment_study`)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from bundle.clinical.brain import BRAIN_METHODS
from bundle.clinical.pipeline import CLINICAL_CONFIG, segment_study
from bundle.errors import install_excepthook

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lckd-clinical", description=__doc__)
    parser.add_argument("study", help="a folder of one study's DICOM files (any names, any depth) or NIfTI files")
    parser.add_argument("--output", required=True, help="a new folder for the outputs (refused when it exists)")
    parser.add_argument("--ckpt_path", default=None, help="the model (default: <bundle_root>/models/model.pt)")
    parser.add_argument(
        "--metadata_file",
        default=None,
        help="the model's metadata.json: version and the Dice table the advice reads (default: configs/)",
    )
    parser.add_argument(
        "--config", default=str(CLINICAL_CONFIG), help="series rules and settings (configs/clinical.json)"
    )
    parser.add_argument(
        "--brain_extraction",
        choices=BRAIN_METHODS,
        default=None,
        help="hd-bet (default), deepbet (lighter, trained on T1 only) or none for series already skull-stripped",
    )
    parser.add_argument("--atlas", default=None, help="a skull-stripped T1 template (e.g. SRI-24) on the model's grid")
    parser.add_argument("--all_grids", action="store_true", help="also write the label map in every series' grid")
    args = parser.parse_args(argv)
    install_excepthook()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # a line per copied DICOM module
    segment_study(
        args.study,
        args.output,
        ckpt_path=args.ckpt_path,
        metadata_file=args.metadata_file,
        config_file=args.config,
        brain_extraction=args.brain_extraction,
        atlas=args.atlas,
        all_grids=args.all_grids,
    )


if __name__ == "__main__":
    main()
