from bundle.transforms.labels import RegionsToLabelsd
from bundle.transforms.modality import LoadSequencesd, RecordModalitiesd, StackModalitiesd, write_modalities_record
from bundle.transforms.postprocessing import RegionPostprocessingd, SmallEnhancingToNecrosis, region_postprocessing
from bundle.transforms.saving import AtomicNibabelWriter, AtomicSaveImaged

__all__ = [
    "RegionsToLabelsd",
    "LoadSequencesd",
    "StackModalitiesd",
    "RecordModalitiesd",
    "write_modalities_record",
    "AtomicNibabelWriter",
    "AtomicSaveImaged",
    "SmallEnhancingToNecrosis",
    "RegionPostprocessingd",
    "region_postprocessing",
]
