"""How a case is prepared for the network, built once from the preprocessing a model records.

Training, validation, evaluation and inference all take their deterministic steps from :func:`case_preprocessing`,
so the image a model is validated on during training is, step for step, the image inference gives it, and the
label maps inference writes are the ones evaluation scores (both invert the same steps). Only the label's path
differs: training resamples it with the image and turns it into the network's three regions; validation and
evaluation keep it on the grid it was read on, where the predictions are scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.transforms import (
    Compose,
    ConvertToMultiChannelBasedOnBratsClassesd,
    CopyItemsd,
    CropForegroundd,
    DeleteItemsd,
    FgBgToIndicesd,
    LoadImaged,
    MapLabelValued,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
    SpatialPadd,
)

from bundle.conventions import label_mapping
from bundle.errors import InputError, check_choice
from bundle.transforms.modality import LoadSequencesd, StackModalitiesd

__all__ = ["APPLIED_PREPROCESSING", "LABEL_HANDLING", "case_preprocessing"]

APPLIED_PREPROCESSING: dict[str, str] = {"intensity": "nonzero_zscore", "crop": "foreground"}
"""The intensity normalisation (z-score over the non-zero voxels of each sequence) and crop (to the image's
foreground) that :func:`case_preprocessing` applies; a model file records them and one recording others is refused."""

LABEL_HANDLING = ("none", "original_grid", "regions")
"""``label`` values of :func:`case_preprocessing`."""

_IMAGE_PATH_ASIDE = "request_image_path"


def case_preprocessing(
    modalities: Sequence[str],
    preprocessing: Mapping[str, Any],
    label: str = "none",
    convention: str = "brats2021",
    sequences: Sequence[str] | None = None,
) -> Compose:
    """The deterministic steps from the files of one case to the network's input.

    Loads ``image`` (all sequences as channels) or one file per sequence, stacks them with a presence ``mask``,
    reorients and resamples to the model's ``orientation`` and ``pixdim``, crops to the foreground and normalises
    each sequence over its non-zero voxels.

    Args:
        modalities: the model's sequences, in channel order.
        preprocessing: the model's record (``pixdim``, ``patch_size``, ``orientation``, ``intensity``, ``crop``),
            as :func:`bundle.networks.model_preprocessing` returns it or ``model_preprocessing`` in train.json.
        label: ``"none"`` for inference (no label read); ``"original_grid"`` for validation and evaluation (the
            label is read and left where it is: predictions are inverted onto it); ``"regions"`` for training (the
            label is mapped from ``convention``, resampled with the image, turned into the TC/WT/ET regions and
            padded to ``patch_size``, with the foreground/background indices a crop by label needs).
        convention: label values on disk (a key of ``bundle.conventions.LABEL_CONVENTIONS``); used with
            ``label="regions"``.
        sequences: the sequences to use, the others treated as absent; ``None``: every sequence a case has.

    Returns:
        A flat ``Compose``; MONAI Label and MONAI Deploy replace or drop its ``LoadImaged``, and its inverse (MONAI's
        ``Invertd``) takes a prediction back to the grid the case was read on.

    Raises:
        InputError: an unknown ``label``, or a record with another intensity normalisation or crop than this bundle
            applies.

    Example:
        >>> record = {"pixdim": [2.0, 2.0, 2.0], "patch_size": [32, 32, 32], "orientation": "RAS"}
        >>> [type(t).__name__ for t in case_preprocessing(["flair", "t1"], record).transforms][-3:]
        ['Spacingd', 'CropForegroundd', 'NormalizeIntensityd']
    """
    check_choice("label", label, LABEL_HANDLING)
    for key, applied in APPLIED_PREPROCESSING.items():
        if preprocessing.get(key, applied) != applied:
            raise InputError(
                f"preprocessing {key} must be {applied!r} (what this bundle applies), got {preprocessing[key]!r}."
            )
    modalities = list(modalities)
    spatial = ["image", "label"] if label == "regions" else ["image"]
    loading = [
        LoadImaged(
            ["image", "label"] if label != "none" else "image",
            allow_missing_keys=True,
            ensure_channel_first=True,
            image_only=True,
        ),
        LoadSequencesd(modalities, ensure_channel_first=True, image_only=True),
        StackModalitiesd(modalities, image_key="image", mask_key="mask", use=sequences),
        # MONAI Label's request path, set aside while Spacingd (MONAI 1.6) would take any image_* entry for metadata;
        # the inference postprocessing puts it back
        CopyItemsd("image_path", names=_IMAGE_PATH_ASIDE, allow_missing_keys=True),
        DeleteItemsd("image_path"),
    ]
    if label == "regions":
        loading.insert(1, MapLabelValued("label", *label_mapping(convention)))
    steps = [
        *loading,
        Orientationd(spatial, axcodes=preprocessing["orientation"], labels=None),
        Spacingd(spatial, pixdim=preprocessing["pixdim"], mode=["bilinear", "nearest"][: len(spatial)]),
    ]
    if label == "regions":
        steps.append(ConvertToMultiChannelBasedOnBratsClassesd("label"))
    steps.append(CropForegroundd(spatial, source_key="image", allow_smaller=True))
    if label == "regions":
        # the indices before the normalisation: it turns brain voxels negative, and image_threshold=0 means "brain"
        steps += [
            SpatialPadd(spatial, spatial_size=preprocessing["patch_size"]),
            FgBgToIndicesd("label", image_key="image", image_threshold=0),
        ]
    steps.append(NormalizeIntensityd("image", nonzero=True, channel_wise=True))
    return Compose(steps)
