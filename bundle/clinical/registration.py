"""Co-registration of a study's sequences: each present sequence onto a reference, rigid, by mutual information.

The reference is T1ce when present, else T1, else FLAIR, else T2 (:data:`REFERENCE_ORDER`): the sequence with the
finest through-plane resolution in most protocols and the one ET is read on. Each other sequence is registered to it
with SimpleITK: a rigid (Euler) transform initialised by the images' centres of mass, Mattes mutual information
(sequences differ in contrast), multi-resolution (4, 2, 1), regular-step gradient descent. The transform maps a
point of the reference's space to the same anatomy in the moving sequence's space, as SimpleITK's resampling needs.

A registration that did not find the anatomy is flagged, not segmented: its mutual information over every voxel
(:func:`mutual_information`) must reach ``min_mutual_information`` (``configs/clinical.json``, default
:data:`MIN_MUTUAL_INFORMATION`). Measured on phantom studies at 2 mm (4 studies, 12 registrations): converged 0.69-0.98;
the same transforms moved 5 mm 0.53-0.58, turned 5 degrees 0.43-0.46, 20 degrees 0.09-0.15. Skull-stripped series
share less structure: on the same studies' brains alone (4 studies, 12 pairs) converged 0.55-0.70, moved 5 mm
0.43-0.50, turned 5 degrees 0.47-0.56; their threshold is :data:`MIN_MUTUAL_INFORMATION_SKULL_STRIPPED`, which catches
shifts and gross failures but not every 5-degree error. A registration that uses every iteration of its last level
(:data:`MAX_ITERATIONS`) did not converge and is refused as well: on 20 studies at 2 mm (240 pairs, every sequence as
reference), 16 pairs ended over 1.5 mm from the truth; the two checks flag 14 of them and 9 of the 224 good pairs
(8 with the FLAIR reference, none with T1ce).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from bundle.errors import InputError

__all__ = [
    "REFERENCE_ORDER",
    "MIN_MUTUAL_INFORMATION",
    "MIN_MUTUAL_INFORMATION_SKULL_STRIPPED",
    "MAX_ITERATIONS",
    "Registration",
    "reference_sequence",
    "register_rigid",
    "mutual_information",
    "coregister",
    "point_errors",
]

REFERENCE_ORDER = ("t1ce", "t1", "flair", "t2")
MIN_MUTUAL_INFORMATION = 0.62
"""Below this (Mattes, 32 bins, every voxel), a registration of series with the head is taken as failed; see the
module's measurements."""
MIN_MUTUAL_INFORMATION_SKULL_STRIPPED = 0.52
"""The same for skull-stripped series (brain extraction ``none``)."""
MAX_ITERATIONS = 200
"""Iterations of the optimiser per level; a registration that uses all of them on the last level did not converge."""


@dataclass
class Registration:
    """One sequence's registration to the reference."""

    transform: object
    """SimpleITK transform: reference point -> the same anatomy in this sequence's space."""
    mutual_information: float
    """Mattes mutual information of the aligned pair over every voxel (higher is better)."""
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


def register_rigid(fixed, moving, seed: int = 1) -> Registration:
    """Rigid registration of ``moving`` onto ``fixed`` (SimpleITK images) by Mattes mutual information.

    Args:
        fixed: the reference image.
        moving: the image to align.
        seed: of the metric's random sampling, at least 1 (SimpleITK takes 0 as "seed from the wall clock", which
            made two runs of one study differ by tenths of a millimetre).

    Returns:
        The transform (fixed point -> moving point), the final metric and the iterations of the last level.
    """
    import SimpleITK as sitk

    if seed < 1:
        raise InputError(f"the registration's seed must be at least 1 (0 would seed from the clock), got {seed}.")
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
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=MAX_ITERATIONS,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed, moving)
    return Registration(transform, mutual_information(fixed, moving, transform), int(method.GetOptimizerIteration()))


def mutual_information(fixed, moving, transform) -> float:
    """Mattes mutual information (32 bins) of ``fixed`` and ``moving`` seen through ``transform``, every voxel."""
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform, inPlace=False)
    # SimpleITK minimises, so it reports the negative
    return -float(method.MetricEvaluate(sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32)))


def coregister(
    images: Mapping[str, object],
    seed: int = 1,
    min_mutual_information: float = MIN_MUTUAL_INFORMATION,
    names: Mapping[str, str] | None = None,
    refuse_unconverged: bool = True,
) -> tuple[str, dict[str, Registration]]:
    """Every sequence of ``images`` registered to the reference (:func:`reference_sequence`).

    Args:
        images: ``{sequence: SimpleITK image}``.
        seed: of the metric's sampling.
        min_mutual_information: a registration below it is refused.
        names: how messages name each sequence's series (default: the sequence).
        refuse_unconverged: refuse a registration that used every iteration of its last level
            (:data:`MAX_ITERATIONS`) as well.

    Returns:
        ``(reference, {sequence: Registration})``; the reference's own entry is the identity.

    Raises:
        InputError: naming each series whose registration stayed below ``min_mutual_information`` or did not
            converge.
    """
    import SimpleITK as sitk

    reference = reference_sequence(images)
    registrations = {reference: Registration(sitk.Euler3DTransform(), float("nan"), 0)}
    for sequence, image in images.items():
        if sequence != reference:
            registrations[sequence] = register_rigid(images[reference], image, seed)
    failed = {
        s: f"mutual information {r.mutual_information:.2f} < {min_mutual_information}"
        for s, r in registrations.items()
        if r.mutual_information < min_mutual_information
    }
    if refuse_unconverged:
        for s, r in registrations.items():
            if s not in failed and r.iterations >= MAX_ITERATIONS:
                failed[s] = (
                    f"not converged in {MAX_ITERATIONS} iterations (mutual information {r.mutual_information:.2f})"
                )
    if failed:
        names = names or {}
        listing = "; ".join(f"{names.get(s, s)}: {why}" for s, why in failed.items())
        raise InputError(
            f"registration to the {reference} series ({names.get(reference, reference)}) failed for {listing}; the "
            "study is not segmented. Check that the series shows the same head, or drop it; a site whose scans "
            "register below the threshold can lower it, or accept unconverged registrations (registration in "
            "configs/clinical.json)."
        )
    return reference, registrations


def point_errors(estimated, truth, points: np.ndarray) -> np.ndarray:
    """Distances in mm between where two transforms send each of ``points`` (N x 3, physical)."""
    return np.asarray(
        [np.linalg.norm(np.subtract(estimated.TransformPoint(p), truth.TransformPoint(p))) for p in map(tuple, points)]
    )
