from bundle.transforms.modality import RandModalityDropd, StackModalitiesd

__all__ = ["StackModalitiesd", "RandModalityDropd"]
