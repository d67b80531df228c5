from bundle.transforms.labels import LABEL_CONVENTIONS, RegionsToLabelsd
from bundle.transforms.modality import RandModalityDropd, StackModalitiesd

__all__ = ["LABEL_CONVENTIONS", "RegionsToLabelsd", "StackModalitiesd", "RandModalityDropd"]
