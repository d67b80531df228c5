from bundle.networks.inferer import CaseMaskInferer, case_window, presence_mask
from bundle.networks.lckdnet import FILL_MODES, LCKDNet
from bundle.networks.model_file import (
    PREPROCESSING_DEFAULTS,
    load_checkpoint,
    load_network,
    model_preprocessing,
    model_sha256,
    network_from_record,
    read_record,
    record_election,
    recorded_teachers,
    save_weights,
)
from bundle.networks.onnx import export_onnx
from bundle.networks.options import inference_network

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
    "load_checkpoint",
    "load_network",
    "save_weights",
    "model_sha256",
]
