"""LCKD missing-modality brain tumour segmentation: the parts MONAI does not already provide."""

from bundle.errors import InputError, InputFileError

__version__ = "0.1.0"
__all__ = ["InputError", "InputFileError", "__version__"]
