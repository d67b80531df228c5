from bundle.networks.lckdnet import FILL_MODES, LCKDNet

__all__ = ["LCKDNet", "FILL_MODES"]
