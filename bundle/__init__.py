"""LCKD missing-modality brain tumour segmentation: the parts MONAI does not already provide."""

__version__ = "0.1.0"
