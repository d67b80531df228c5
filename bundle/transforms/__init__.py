from bundle.transforms.labels import LABEL_CONVENTIONS, RegionsToLabelsd, label_mapping
from bundle.transforms.modality import LoadSequencesd, RecordModalitiesd, StackModalitiesd, write_modalities_record
from bundle.transforms.saving import AtomicNibabelWriter, AtomicSaveImaged

__all__ = [
    "LABEL_CONVENTIONS",
    "label_mapping",
    "RegionsToLabelsd",
    "LoadSequencesd",
    "StackModalitiesd",
    "RecordModalitiesd",
    "write_modalities_record",
    "AtomicNibabelWriter",
    "AtomicSaveImaged",
]
