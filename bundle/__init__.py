"""LCKD missing-modality brain tumour segmentation: the parts MONAI does not already provide."""

import sys
from pathlib import Path

from bundle.errors import InputError, InputFileError, install_excepthook

__version__ = "0.1.0"
__all__ = ["BUNDLE_ROOT", "InputError", "InputFileError", "__version__"]

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
"""The bundle this package belongs to (its ``configs/``, ``models/``, ``jobs/``): the repository root, or an unpacked package."""

if Path(sys.argv[0]).parts[-3:] == ("monai", "bundle", "__main__.py"):
    # any `python -m monai.bundle <command>` (run, ckpt_export, verify_net_in_out) that imports the bundle's code:
    # a bad file or setting is one line, not a traceback through MONAI's config parser
    install_excepthook()
