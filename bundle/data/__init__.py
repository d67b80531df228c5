from bundle.data.discovery import (
    LAYOUTS,
    MSD,
    case_name,
    dataset_convention,
    detect_layout,
    discover_cases,
    load_datalist,
    split_cases,
)
from bundle.data.synthetic import DEFAULT_TEACHERS, make_case, make_dataset, parse_teachers

__all__ = [
    "LAYOUTS",
    "MSD",
    "case_name",
    "dataset_convention",
    "detect_layout",
    "discover_cases",
    "load_datalist",
    "split_cases",
    "DEFAULT_TEACHERS",
    "make_case",
    "make_dataset",
    "parse_teachers",
]
