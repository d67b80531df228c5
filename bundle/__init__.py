"""LCKD missing-modality brain tumour segmentation: the parts MONAI does not already provide."""

from pathlib import Path

from bundle.errors import InputError, InputFileError

__version__ = "0.1.0"
__all__ = ["BUNDLE_ROOT", "InputError", "InputFileError", "__version__"]

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
"""The bundle this package belongs to (its ``configs/``, ``models/``, ``jobs/``): the repository root, or an unpacked package."""
