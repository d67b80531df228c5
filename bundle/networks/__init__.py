from bundle.networks.lckdnet import FILL_MODES, LCKDNet
from bundle.networks.onnx import export_onnx
from bundle.networks.options import inference_network

__all__ = ["LCKDNet", "FILL_MODES", "export_onnx", "inference_network"]
