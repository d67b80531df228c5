from bundle.networks.inferer import CaseMaskInferer, presence_mask
from bundle.networks.lckdnet import FILL_MODES, LCKDNet
from bundle.networks.onnx import export_onnx
from bundle.networks.options import inference_network

__all__ = ["LCKDNet", "FILL_MODES", "CaseMaskInferer", "presence_mask", "export_onnx", "inference_network"]
