from bundle.data.caching import CACHE_MODES, cache_mode, cache_size, cached_dataset
from bundle.data.discovery import (
    case_folders,
    dataset_convention,
    detect_layout,
    discover_cases,
    load_datalist,
    optimism,
    split_cases,
)
from bundle.data.synthetic import DEFAULT_TEACHERS, make_case, make_dataset, parse_teachers
from bundle.data.validation import check_dataset, checked_cases

__all__ = [
    "CACHE_MODES",
    "cache_mode",
    "cache_size",
    "cached_dataset",
    "dataset_convention",
    "case_folders",
    "detect_layout",
    "discover_cases",
    "load_datalist",
    "optimism",
    "split_cases",
    "check_dataset",
    "checked_cases",
    "DEFAULT_TEACHERS",
    "make_case",
    "make_dataset",
    "parse_teachers",
]
