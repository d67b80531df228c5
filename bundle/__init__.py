"""LCKD missing-modality brain tumour segmentation: the parts MONAI does not already provide."""

from bundle.errors import InputError, InputFileError, install_excepthook

__version__ = "0.1.0"
__all__ = ["InputError", "InputFileError", "__version__"]

install_excepthook()
