from bundle.transforms.labels import LabelRegionsd, PredictionToLabelsd, RegionsToLabelsd
from bundle.transforms.modality import LoadSequencesd, RecordModalitiesd, StackModalitiesd, write_modalities_record
from bundle.transforms.postprocessing import RegionPostprocessingd, SmallEnhancingToNecrosis, region_postprocessing
from bundle.transforms.preprocessing import APPLIED_PREPROCESSING, LABEL_HANDLING, case_preprocessing
from bundle.transforms.saving import AtomicNibabelWriter, AtomicSaveImaged

__all__ = [
    "APPLIED_PREPROCESSING",
    "LABEL_HANDLING",
    "case_preprocessing",
    "RegionsToLabelsd",
    "PredictionToLabelsd",
    "LabelRegionsd",
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
