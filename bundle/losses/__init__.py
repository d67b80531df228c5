from bundle.losses.ckd import CKDLoss, LCKDLoss, RegionDiceBCELoss

__all__ = ["CKDLoss", "RegionDiceBCELoss", "LCKDLoss"]
