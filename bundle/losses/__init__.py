from bundle.losses.ckd import CKDLoss, LCKDLoss

__all__ = ["CKDLoss", "LCKDLoss"]
