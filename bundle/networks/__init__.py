from bundle.networks.lckdnet import FILL_MODES, LCKDNet
from bundle.networks.options import inference_network

__all__ = ["LCKDNet", "FILL_MODES", "inference_network"]
