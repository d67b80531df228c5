from bundle.networks.inferer import CaseMaskInferer, case_window, presence_mask
from bundle.networks.lckdnet import FILL_MODES, LCKDNet
from bundle.networks.onnx import export_onnx
from bundle.networks.options import inference_network
from bundle.networks.record import (
    PREPROCESSING_DEFAULTS,
    model_preprocessing,
    network_from_record,
    read_record,
    record_election,
    recorded_teachers,
)

__all__ = [
    "LCKDNet",
    "FILL_MODES",
    "CaseMaskInferer",
    "presence_mask",
    "case_window",
    "export_onnx",
    "inference_network",
    "network_from_record",
    "model_preprocessing",
    "PREPROCESSING_DEFAULTS",
    "read_record",
    "recorded_teachers",
    "record_election",
]
