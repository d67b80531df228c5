"""Co-registration of a study's sequences: each present sequence onto a reference, rigid, by mutual information.

The reference is T1ce when present, else T1, else FLAIR, else T2 (:data:`REFERENCE_ORDER`): the sequence with the
finest through-plane resolution in most protocols and the one ET is read on. Each other sequence is registered to it
with SimpleITK: a rigid (Euler) transform initialised by the images' centres of mass, Mattes mutual information
(sequences differ in contrast), multi-resolution (4, 2, 1), regular-step gradient descent. The transform maps a
point of the reference's space to the same anatomy in the moving sequence's space, as SimpleITK's resampling needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from bundle.errors import InputError

__all__ = ["REFERENCE_ORDER", "Registration", "reference_sequence", "register_rigid", "coregister", "point_errors"]

REFERENCE_ORDER = ("t1ce", "t1", "flair", "t2")


@dataclass
class Registration:
    """One sequence's registration to the reference."""

    transform: object
    """SimpleITK transform: reference point -> the same anatomy in this sequence's space."""
    metric: float
    """The final Mattes mutual information (negative: lower is better)."""
    iterations: int


def reference_sequence(present: Iterable[str]) -> str:
    """The first of :data:`REFERENCE_ORDER` among ``present``.

    Example:
        >>> reference_sequence(["flair", "t2", "t1"])
        't1'
    """
    present = set(present)
    for sequence in REFERENCE_ORDER:
        if sequence in present:
            return sequence
    raise InputError(f"no sequence to register: got {sorted(present)}, expected some of {list(REFERENCE_ORDER)}.")


def register_rigid(fixed, moving, seed: int = 0) -> Registration:
    """Rigid registration of ``moving`` onto ``fixed`` (SimpleITK images) by Mattes mutual information.

    Args:
        fixed: the reference image.
        moving: the image to align.
        seed: of the metric's random sampling (a registration is then reproducible).

    Returns:
        The transform (fixed point -> moving point), the final metric and the iterations of the last level.
    """
    import SimpleITK as sitk

    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=200, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed, moving)
    return Registration(transform, float(method.GetMetricValue()), int(method.GetOptimizerIteration()))


def coregister(images: Mapping[str, object], seed: int = 0) -> tuple[str, dict[str, Registration]]:
    """Every sequence of ``images`` registered to the reference (:func:`reference_sequence`).

    Returns:
        ``(reference, {sequence: Registration})``; the reference's own entry is the identity.
    """
    import SimpleITK as sitk

    reference = reference_sequence(images)
    registrations = {reference: Registration(sitk.Euler3DTransform(), 0.0, 0)}
    for sequence, image in images.items():
        if sequence != reference:
            registrations[sequence] = register_rigid(images[reference], image, seed)
    return reference, registrations


def point_errors(estimated, truth, points: np.ndarray) -> np.ndarray:
    """Distances in mm between where two transforms send each of ``points`` (N x 3, physical)."""
    return np.asarray(
        [np.linalg.norm(np.subtract(estimated.TransformPoint(p), truth.TransformPoint(p))) for p in map(tuple, points)]
    )
