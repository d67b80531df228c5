"""Anatomical phantoms on the BraTS grid: the MNI ICBM 2009a brain, deformed per case, with a tumour and MRI contrast.

The anatomy is the MNI ICBM 2009a symmetric template shipped inside the ``nilearn`` wheel (T1, grey and
white matter probability maps, 1 mm, skull-stripped; CSF = brain - GM - WM); nothing is downloaded. Each
case gets a random smooth deformation and scaling, a tumour seeded in the white matter of either
hemisphere (sometimes two foci): a necrotic core, an enhancing rim and oedema spreading along white
matter, with some cases lacking enhancement or necrosis. Each sequence shows the tissue classes as
radiologists read them (:data:`CONTRAST`), times a per-sequence scale and a smooth bias field, with Rician
noise. The result lies on BraTS's 240 x 240 x 155 grid at 1 mm (or coarser with ``spacing``), with the
brain off-centre as in the SRI-24 space, in any of the three layouts the bundle reads.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bundle.conventions import DEFAULT_MODALITIES, LABEL_CONVENTIONS, LAYOUTS, MSD, label_mapping
from bundle.data.synthetic import smooth_field
from bundle.errors import InputError, install_excepthook
from bundle.io import atomic_write_json

__all__ = [
    "BRATS_GRID",
    "CONTRAST",
    "PHANTOM_LAYOUTS",
    "template_tissues",
    "atlas_template",
    "make_phantom",
    "make_phantom_dataset",
    "save_preview",
    "main",
]

logger = logging.getLogger(__name__)

BRATS_GRID = (240, 240, 155)
"""BraTS's voxel grid at 1 mm (SRI-24 space)."""

BRAIN_CENTRE_MM = (120.0, 128.0, 75.0)
"""Where the centre of the brain's bounding box lies on that grid, in mm from the first voxel: off-centre in y,
and low enough that, as in BraTS cases, the brain stem may leave the grid's lowest slices."""

CLASSES = ("csf", "gm", "wm", "edema", "necrosis", "enhancing")

CONTRAST: dict[str, dict[str, float]] = {
    "flair": {"csf": 0.08, "gm": 0.60, "wm": 0.45, "edema": 1.00, "necrosis": 0.40, "enhancing": 0.75},
    "t1": {"csf": 0.25, "gm": 0.55, "wm": 0.80, "edema": 0.45, "necrosis": 0.30, "enhancing": 0.50},
    "t1ce": {"csf": 0.25, "gm": 0.55, "wm": 0.80, "edema": 0.45, "necrosis": 0.06, "enhancing": 1.30},
    "t2": {"csf": 1.00, "gm": 0.60, "wm": 0.40, "edema": 0.85, "necrosis": 0.95, "enhancing": 0.65},
}
"""Relative intensity of each tissue class per sequence: T1 WM > GM > CSF with the tumour hypo-intense; T1ce
as T1 with a very bright enhancing rim and a necrosis darker than CSF; T2 CSF, oedema and necrosis bright; FLAIR CSF
suppressed and oedema brightest. So ET and TC are decisive in T1ce and WT in FLAIR."""

PHANTOM_LAYOUTS = ("brats2021", "brats2023", MSD)

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@functools.cache
def template_tissues() -> dict[str, np.ndarray]:
    """``{"brain", "csf", "gm", "wm"}``: float32 probability maps of the MNI ICBM 2009a template (197 x 233 x 189, 1 mm),
    and ``"t1"``: its skull-stripped T1 image.

    Raises:
        InputError: when ``nilearn`` (which ships the template files) is not installed.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the anatomical phantoms need the MNI template inside nilearn: pip install nilearn==0.14.1.")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    maps = {key: np.asarray(nib.load(folder / name).dataobj, dtype=np.float32) for key, name in _TEMPLATE_FILES.items()}
    brain = (maps["t1"] > 0).astype(np.float32)
    gm, wm = maps["gm"] / 255.0 * brain, maps["wm"] / 255.0 * brain
    return {"brain": brain, "gm": gm, "wm": wm, "csf": np.clip(brain - gm - wm, 0.0, 1.0), "t1": maps["t1"]}


def _brats_grid_mm(spacing: float) -> tuple[tuple[int, ...], np.ndarray]:
    """The BraTS grid's shape at ``spacing`` mm and each voxel's position in mm from the first (3 x shape)."""
    shape = tuple(int(round(s / spacing)) for s in BRATS_GRID)
    return shape, np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) * spacing for s in shape], indexing="ij"))


def _template_coordinates(grid_mm: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Where each BraTS-grid voxel lies in the template (voxel indices): the brain's centre at
    :data:`BRAIN_CENTRE_MM`, the template scaled by ``scale`` per axis."""
    extent = np.argwhere(template_tissues()["brain"] > 0)
    template_centre = ((extent.min(0) + extent.max(0)) / 2).astype(np.float32)
    offset = grid_mm - np.asarray(BRAIN_CENTRE_MM, np.float32)[:, None, None, None]
    return template_centre[:, None, None, None] + offset / np.asarray(scale, np.float32)[:, None, None, None]


def atlas_template(spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The MNI ICBM 2009a T1 template, skull-stripped and undeformed, on the phantoms' BraTS grid: the atlas a
    clinical study's brain is aligned to (:mod:`bundle.clinical.atlas`).

    Returns:
        ``(float32 image on the grid at spacing mm, its RAS affine)``, the affine as :func:`make_phantom`'s.

    Example:
        >>> atlas_template(3.0)[0].shape
        (80, 80, 52)
    """
    _, grid_mm = _brats_grid_mm(spacing)
    tissues = template_tissues()
    image = ndimage.map_coordinates(tissues["t1"], _template_coordinates(grid_mm, np.ones(3)), order=1, cval=0.0)
    return image.astype(np.float32), _grid_affine(spacing)


def _grid_affine(spacing: float) -> np.ndarray:
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = [0.0, 239.0, 0.0]  # BraTS's SRI-24 headers: origin (0, -239, 0) in LPS, i.e. this RAS affine
    return affine


def _tumour(
    rng: np.random.Generator, grid_mm: np.ndarray, wm: np.ndarray, brain: np.ndarray, spacing: float
) -> dict[str, np.ndarray]:
    """Boolean masks ``edema``, ``necrosis``, ``enhancing`` (disjoint) of one case, on the output grid."""
    shape = wm.shape
    candidates = np.argwhere((wm > 0.6) & (ndimage.binary_erosion(brain > 0.5, iterations=max(1, int(12 / spacing)))))
    foci = 2 if rng.random() < 0.2 else 1
    has_enhancing = rng.random() >= 0.15
    has_necrosis = rng.random() >= 0.15
    wobble = 0.15 * smooth_field(rng, shape, 6)
    wm_spread = ndimage.gaussian_filter(wm, 3.0 / spacing)
    edema = np.zeros(shape, bool)
    core = np.zeros(shape, bool)
    necrosis = np.zeros(shape, bool)
    for focus in range(foci):
        i, j, k = candidates[rng.integers(len(candidates))]
        centre = grid_mm[:, i, j, k]
        radius = rng.uniform(12.0, 24.0) * (0.6 if focus else 1.0)
        distance = np.sqrt(((grid_mm - centre[:, None, None, None]) ** 2).sum(0)) / radius + wobble
        core |= distance < 1.0
        necrosis |= distance < rng.uniform(0.45, 0.6)
        # oedema reaches up to 2.2 core radii along white matter, 1.4 elsewhere
        edema |= distance < 1.4 + 0.8 * wm_spread
    inside = brain > 0.5
    core &= inside
    necrosis &= core
    if not has_necrosis:
        necrosis[:] = False
    enhancing = core & ~necrosis
    if not has_enhancing:  # a non-enhancing core: the rim is necrotic / non-enhancing tissue (label 1)
        necrosis = core.copy()
        enhancing[:] = False
    edema = edema & inside & ~core
    return {"edema": edema, "necrosis": necrosis, "enhancing": enhancing}


def make_phantom(
    rng: np.random.Generator, spacing: float = 1.0, modalities: Sequence[str] = DEFAULT_MODALITIES
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One anatomical case on the BraTS grid at ``spacing`` mm.

    Args:
        rng: random generator; the case is a function of its state.
        spacing: voxel size in mm (1.0: 240 x 240 x 155; 2.0: 120 x 120 x 78; ...).
        modalities: the sequences to make, names of :data:`CONTRAST`.

    Returns:
        ``({sequence: float32 image}, uint8 label in the BraTS 2018-2021 convention (1 NCR, 2 ED, 4 ET), affine)``;
        background (outside the brain) exactly 0.
    """
    unknown = [m for m in modalities if m not in CONTRAST]
    if unknown:
        raise InputError(f"phantoms have contrast for {list(CONTRAST)}, not {unknown}.")
    tissues = template_tissues()
    shape, grid_mm = _brats_grid_mm(spacing)
    scale = rng.uniform(0.9, 1.05, 3).astype(np.float32)
    displacement = np.stack([3.0 * smooth_field(rng, shape, 5) for _ in range(3)])
    source = _template_coordinates(grid_mm, scale) + displacement
    maps = {
        key: ndimage.map_coordinates(tissues[key], source, order=1, cval=0.0) for key in ("brain", "csf", "gm", "wm")
    }
    brain = maps["brain"]
    tumour = _tumour(rng, grid_mm, maps["wm"], brain, spacing)
    label = np.zeros(shape, np.uint8)
    label[tumour["edema"]] = LABEL_CONVENTIONS["brats2021"]["ED"]
    label[tumour["necrosis"]] = LABEL_CONVENTIONS["brats2021"]["NCR"]
    label[tumour["enhancing"]] = LABEL_CONVENTIONS["brats2021"]["ET"]
    # partial volume at the tumour's borders: blur the class maps by a voxel
    soft = {key: ndimage.gaussian_filter(mask.astype(np.float32), 0.6) for key, mask in tumour.items()}
    tumour_weight = np.clip(sum(soft.values()), 0.0, 1.0)
    healthy = 1.0 - tumour_weight
    images = {}
    for modality in modalities:
        contrast = CONTRAST[modality]
        image = healthy * sum(contrast[key] * maps[key] for key in ("csf", "gm", "wm"))
        image = image + brain * sum(contrast[key] * soft[key] for key in soft)
        image = image * np.exp(0.12 * smooth_field(rng, shape, 4)) * rng.uniform(600.0, 1400.0)
        sigma = 0.025 * float(image[brain > 0.5].mean())
        noisy = np.sqrt((image + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2)
        images[modality] = np.where(brain > 0.5, noisy, 0.0).astype(np.float32)
    label[brain <= 0.5] = 0
    return images, label, _grid_affine(spacing)


def _in_convention(label: np.ndarray, convention: str) -> np.ndarray:
    """A BraTS 2018-2021 label map in the label values of ``convention``."""
    converted = np.zeros_like(label)
    for source, target in zip(*label_mapping("brats2021", convention)):
        converted[label == source] = target
    return converted


def _write_case(
    root: Path, name: str, images: Mapping[str, np.ndarray], label: np.ndarray, affine: np.ndarray, layout: str
) -> None:
    if layout == MSD:
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(exist_ok=True)
        stacked = np.stack([images[m] for m in DEFAULT_MODALITIES], axis=-1)
        nib.save(nib.Nifti1Image(stacked, affine), root / "imagesTr" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(_in_convention(label, MSD), affine), root / "labelsTr" / f"{name}.nii.gz")
        return
    spec = LAYOUTS[layout]
    case_dir = root / name
    case_dir.mkdir(parents=True, exist_ok=True)
    for modality, image in images.items():
        nib.save(
            nib.Nifti1Image(image, affine),
            case_dir / f"{name}{spec['separator']}{spec['names'].get(modality, modality)}.nii.gz",
        )
    nib.save(
        nib.Nifti1Image(_in_convention(label, spec["convention"]), affine),
        case_dir / f"{name}{spec['separator']}{spec['label']}.nii.gz",
    )


def make_phantom_dataset(
    out_dir: str | Path,
    cases: int = 20,
    seed: int = 0,
    spacing: float = 1.0,
    layout: str = "brats2021",
    name_prefix: str = "PHANTOM",
) -> list[str]:
    """Write ``cases`` anatomical phantoms in ``layout``; case ``i`` depends only on ``(seed, i)``.

    Args:
        out_dir: dataset folder (created).
        cases: number of cases.
        seed: of the generator.
        spacing: voxel size in mm on the BraTS grid (1.0 = 240 x 240 x 155).
        layout: one of :data:`PHANTOM_LAYOUTS`.
        name_prefix: case names are ``<name_prefix>_0000``, ... (``-`` in the BraTS 2023 layout); datasets that
            are pooled later (sites of a federation) need distinct prefixes.

    Returns:
        The case names written.
    """
    if layout not in PHANTOM_LAYOUTS:
        raise InputError(f"layout must be one of {list(PHANTOM_LAYOUTS)}, got {layout!r}.")
    if cases < 1 or not 0.5 <= spacing <= 8.0:
        raise InputError(f"cases must be >= 1 and spacing within 0.5-8 mm, got {cases} and {spacing}.")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(cases):
        images, label, affine = make_phantom(np.random.default_rng([seed, index]), spacing)
        name = f"{name_prefix}{'-' if layout == 'brats2023' else '_'}{index:04d}"
        _write_case(root, name, images, label, affine, layout)
        names.append(name)
    if layout == MSD:
        entries = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names]
        atomic_write_json(root / "dataset.json", {"name": "phantoms", "training": entries})
    atomic_write_json(root / "phantoms.json", {"cases": cases, "seed": seed, "spacing": spacing, "layout": layout})
    return names


def save_preview(images: Mapping[str, np.ndarray], label: np.ndarray, path: str | Path) -> Path:
    """A PNG of the axial, coronal and sagittal slices through the tumour of every sequence, label outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = np.argwhere(label > 0).mean(0).astype(int) if label.any() else np.asarray(label.shape) // 2
    views = [lambda a: a[:, :, centre[2]].T, lambda a: a[:, centre[1], :].T, lambda a: a[centre[0], :, :].T]
    figure, axes = plt.subplots(3, len(images), figsize=(3 * len(images), 9))
    for column, (modality, image) in enumerate(images.items()):
        for row, view in enumerate(views):
            axis = axes[row, column]
            axis.imshow(view(image), cmap="gray", origin="lower", vmax=float(np.percentile(image[image > 0], 99.5)))
            axis.contour(view(label), levels=[0.5, 1.5, 3.0], colors=["yellow", "red", "cyan"], linewidths=0.6)
            axis.axis("off")
            if row == 0:
                axis.set_title(modality)
    figure.suptitle("phantom: oedema (outer contour), tumour core, enhancing tumour", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``lckd-make-phantoms --out data/phantoms --cases 20 [--spacing 2] [--layout msd] [--png f.png]``."""
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=1.0, help="mm; 1 gives BraTS's 240 x 240 x 155 grid")
    parser.add_argument("--layout", default="brats2021", choices=PHANTOM_LAYOUTS)
    parser.add_argument("--png", help="also write a preview of the first case")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = make_phantom_dataset(args.out, args.cases, args.seed, args.spacing, args.layout)
    logger.info(f"wrote {len(names)} phantoms to {args.out} ({args.layout}, {args.spacing} mm)")
    if args.png:
        images, label, _ = make_phantom(np.random.default_rng([args.seed, 0]), args.spacing)
        logger.info(f"preview: {save_preview(images, label, args.png)}")


if __name__ == "__main__":
    main()
