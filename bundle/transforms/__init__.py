from bundle.transforms.labels import LABEL_CONVENTIONS, RegionsToLabelsd, label_mapping
from bundle.transforms.modality import LoadSequencesd, RecordModalitiesd, StackModalitiesd

__all__ = [
    "LABEL_CONVENTIONS",
    "label_mapping",
    "RegionsToLabelsd",
    "LoadSequencesd",
    "StackModalitiesd",
    "RecordModalitiesd",
]
