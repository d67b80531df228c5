"""Synthetic BraTS-like cases whose correct per-region teacher modalities are known.

Each case is a skull-stripped "brain" ellipsoid with one tumour made of nested, irregular regions:
whole tumour WT (edema + core), tumour core TC (necrosis + enhancing) and enhancing tumour ET (a
shell of the core). Every region adds an intensity step inside it: a strong step (``strong``) in the
modality that is the region's teacher and a faint one (``weak``) in every other modality, on top of
smooth tissue texture and Gaussian noise. So, for each region, the teacher modality alone shows the
region's boundary clearly, and an election that picks the modality with the best single-modality
Dice should return ``teachers``. ``weak / strong`` is how much of the decisive signal is shared
across modalities.

Labels follow BraTS 2018-2021: 1 necrosis (NCR), 2 edema (ED), 4 enhancing tumour (ET).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from bundle.conventions import DEFAULT_MODALITIES, REPORT_REGIONS, check_modalities
from bundle.errors import InputError, install_excepthook
from bundle.io import atomic_write_json

__all__ = ["DEFAULT_TEACHERS", "smooth_field", "make_case", "make_dataset", "parse_teachers", "main"]

DEFAULT_TEACHERS: dict[str, str] = {"ET": "t1ce", "TC": "t1ce", "WT": "flair"}
"""Which modality shows each region most clearly, as in real BraTS scans."""

INFO_FILE = "synthetic.json"


def parse_teachers(text: str, modalities: Sequence[str] = DEFAULT_MODALITIES) -> dict[str, str]:
    """Parse ``"ET=t1ce,TC=t1ce,WT=flair"`` into a region -> modality dict, validated.

    Raises:
        ValueError: naming the bad entry, when a region or modality is unknown or a region is missing.
    """
    teachers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        region, sep, modality = item.partition("=")
        region, modality = region.strip().upper(), modality.strip()
        if not sep or region not in REPORT_REGIONS or modality not in modalities:
            raise InputError(
                f"bad teacher {item!r} in {text!r}: expected REGION=MODALITY with REGION in {list(REPORT_REGIONS)} "
                f"and MODALITY in {list(modalities)}, e.g. 'ET=t1ce,TC=t1ce,WT=flair'."
            )
        teachers[region] = modality
    missing = [region for region in REPORT_REGIONS if region not in teachers]
    if missing:
        raise InputError(
            f"teachers {text!r} name no modality for {missing}; give one for each of {list(REPORT_REGIONS)}."
        )
    return teachers


def smooth_field(rng: np.random.Generator, shape: Sequence[int], coarse: int = 5) -> np.ndarray:
    """Zero-mean, unit-std random field varying over about ``1 / coarse`` of the volume."""
    field = torch.from_numpy(rng.standard_normal((1, 1, coarse, coarse, coarse)).astype(np.float32))
    field = F.interpolate(field, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()
    return (field - field.mean()) / (field.std() + 1e-6)


def make_case(
    rng: np.random.Generator,
    size: Sequence[int],
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    teachers: Mapping[str, str] = DEFAULT_TEACHERS,
    strong: float = 1.0,
    weak: float = 0.3,
    noise: float = 0.3,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One synthetic case.

    Args:
        rng: random generator; the case is a function of its state.
        size: spatial shape ``(H, W, D)``.
        modalities: names of the images to make.
        teachers: region (ET, TC, WT) -> modality that shows it with the ``strong`` step.
        strong: intensity step of a region in its teacher modality (tissue is 1.0).
        weak: intensity step of a region in every other modality.
        noise: standard deviation of the Gaussian noise.

    Returns:
        ``({modality: float32 (H, W, D)}, uint8 label (H, W, D))``, background exactly 0.
    """
    shape = tuple(int(s) for s in size)
    grid = np.stack(np.meshgrid(*[np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape], indexing="ij"))

    def ellipsoid_distance(centre: np.ndarray, radii: np.ndarray, wobble: float) -> np.ndarray:
        dist = np.sqrt((((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0))
        return dist + wobble * smooth_field(rng, shape)

    brain = ellipsoid_distance(np.zeros(3, np.float32), rng.uniform(0.78, 0.9, 3).astype(np.float32), 0.03) < 1
    centre = rng.uniform(-0.3, 0.3, 3).astype(np.float32)
    wt_radii = rng.uniform(0.32, 0.42, 3).astype(np.float32)
    whole = ellipsoid_distance(centre, wt_radii, 0.12) < 1
    core_centre = centre + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    core_distance = ellipsoid_distance(core_centre, wt_radii * rng.uniform(0.6, 0.72), 0.1)
    core = (core_distance < 1) & brain
    necrosis = core_distance < rng.uniform(0.45, 0.6)
    whole = (whole | core) & brain
    enhancing = core & ~necrosis

    label = np.zeros(shape, np.uint8)
    label[whole] = 2
    label[core] = 1
    label[enhancing] = 4

    regions = {"WT": whole, "TC": core, "ET": enhancing}
    images = {}
    for modality in modalities:
        image = 1.0 + 0.15 * smooth_field(rng, shape, coarse=8)
        for region, inside in regions.items():
            image += (strong if teachers[region] == modality else weak) * inside
        image += noise * rng.standard_normal(shape).astype(np.float32)
        images[modality] = np.where(brain, np.clip(image, 0.01, None) * 100.0, 0.0).astype(np.float32)
    return images, label


def make_dataset(
    out_dir: str | os.PathLike,
    cases: int = 40,
    size: int | Sequence[int] = 64,
    seed: int = 0,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    teachers: Mapping[str, str] = DEFAULT_TEACHERS,
    missing_rate: float = 0.0,
    strong: float = 1.0,
    weak: float = 0.3,
    noise: float = 0.3,
    spacing: float = 1.0,
    shared: float | None = None,
) -> list[Path]:
    """Write ``cases`` synthetic cases in the BraTS 2018-2021 layout.

    ``<out_dir>/<case>/<case>_{modality}.nii.gz`` and ``<case>_seg.nii.gz``, plus ``synthetic.json``
    recording the parameters and the teacher set. Case ``i`` depends only on ``(seed, i)``, so the
    same seed gives the same files. ``missing_rate`` omits each modality file with that probability,
    never all of a case.

    ``shared`` (0 ... 1) is the knob of the modality focusing hypothesis experiment: the fraction of
    each region's decisive signal shared by every modality (``weak = shared * strong``); 0 leaves the
    region to its teacher alone, 1 shows it equally in all. When given it overrides ``weak``.

    Returns:
        The case folders written.
    """
    modalities = check_modalities(modalities)
    if shared is not None:
        if not 0.0 <= shared <= 1.0:
            raise InputError(
                f"shared must be in [0, 1] (the fraction of the signal every modality shows), got {shared}."
            )
        weak = shared * strong
    if cases < 1:
        raise InputError(f"cases must be at least 1, got {cases}.")
    if not 0.0 <= missing_rate < 1.0:
        raise InputError(f"missing_rate must be in [0, 1), got {missing_rate}.")
    shape = (int(size),) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 16:
        raise InputError(f"size must be one int or three ints, each at least 16, got {size}.")
    unknown = {region: m for region, m in teachers.items() if m not in modalities}
    if unknown or set(teachers) != set(REPORT_REGIONS):
        raise InputError(
            f"teachers must map each of {list(REPORT_REGIONS)} to one of {list(modalities)}, got {dict(teachers)}."
        )

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = [spacing * (shape[0] - 1) / 2, spacing * (shape[1] - 1) / 2, -spacing * (shape[2] - 1) / 2]
    written = []
    for index in range(cases):
        rng = np.random.default_rng([seed, index])
        images, label = make_case(rng, shape, modalities, teachers, strong, weak, noise)
        present = rng.random(len(modalities)) >= missing_rate
        if not present.any():
            present[rng.integers(len(modalities))] = True
        name = f"SYNTH_{index:04d}"
        case_dir = root / name
        case_dir.mkdir(exist_ok=True)
        for modality, keep in zip(modalities, present):
            path = case_dir / f"{name}_{modality}.nii.gz"
            if keep:
                nib.save(nib.Nifti1Image(images[modality], affine), path)
            else:
                path.unlink(missing_ok=True)
        nib.save(nib.Nifti1Image(label, affine), case_dir / f"{name}_seg.nii.gz")
        written.append(case_dir)
    atomic_write_json(
        root / INFO_FILE,
        {
            "layout": "brats2021",
            "modalities": list(modalities),
            "teachers": dict(teachers),
            "cases": cases,
            "size": list(shape),
            "seed": seed,
            "missing_rate": missing_rate,
            "strong": strong,
            "weak": weak,
            "shared": weak / strong if strong else None,
            "noise": noise,
            "spacing": spacing,
        },
    )
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``lckd-make-synthetic --out DIR --cases N --size S --seed K``."""
    install_excepthook()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", required=True, help="dataset folder to write (created if absent)")
    parser.add_argument("--cases", type=int, default=40, help="number of cases")
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="edge length, or three edge lengths")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files")
    parser.add_argument("--modalities", default=",".join(DEFAULT_MODALITIES), help="comma-separated sequence names")
    parser.add_argument(
        "--teachers",
        default=",".join(f"{r}={m}" for r, m in DEFAULT_TEACHERS.items()),
        help="which modality shows each region most clearly",
    )
    parser.add_argument("--missing-rate", type=float, default=0.0, help="probability of omitting each modality file")
    parser.add_argument("--strong", type=float, default=1.0, help="intensity step of a region in its teacher modality")
    parser.add_argument("--weak", type=float, default=0.3, help="intensity step of a region in the other modalities")
    parser.add_argument("--noise", type=float, default=0.3, help="Gaussian noise standard deviation")
    parser.add_argument(
        "--shared", type=float, default=None, help="fraction of each region's signal all modalities show (sets --weak)"
    )
    args = parser.parse_args(argv)
    modalities = check_modalities([m.strip() for m in args.modalities.split(",") if m.strip()])
    try:
        teachers = parse_teachers(args.teachers, modalities)
        size = args.size[0] if len(args.size) == 1 else args.size
        cases = make_dataset(
            args.out,
            args.cases,
            size,
            args.seed,
            modalities,
            teachers,
            args.missing_rate,
            args.strong,
            args.weak,
            args.noise,
            shared=args.shared,
        )
    except ValueError as error:
        parser.error(str(error))
    summary = ", ".join(f"{r}->{m}" for r, m in teachers.items())
    print(f"wrote {len(cases)} synthetic cases to {args.out} (teachers {summary})")


if __name__ == "__main__":
    main()
