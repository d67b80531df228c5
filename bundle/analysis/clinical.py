"""The clinical path measured on phantom studies: registration error, brain-mask Dice, native-space Dice for every
modality combination against the same cases given preprocessed, and whether the model's advice foretells the gains.

For each study (:func:`bundle.clinical.studies.make_study`, all four sequences acquired) and each sequence that can be
the reference, the stages of :func:`bundle.clinical.pipeline.segment_study` run once: the other series registered to
it, its brain extracted (by each extractor of :data:`EXTRACTORS`, scored; the configured one's mask goes on), aligned
to the atlas, every sequence brought onto the atlas grid. A combination then takes
the reference the pipeline would take for it (:func:`bundle.clinical.registration.reference_sequence`) and its
sequences' atlas-grid files, which the bundle's inference segments (one run per combination over all studies); the
label maps go back to the reference's grid and are scored against the truth drawn there. The preprocessed arm gives
the same model the same cases as BraTS distributes them (skull-stripped, on the atlas grid, from the truth) and scores
on that grid. Both arms use :func:`bundle.metrics.score_label_maps` (Dice, brats2025 rules).

Run: ``lckd-measure-clinical --studies 20 --out eval/clinical``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bundle import BUNDLE_ROOT
from bundle.clinical.atlas import align_to_atlas, load_atlas, to_atlas, to_native
from bundle.clinical.brain import extract_brain
from bundle.clinical.pipeline import read_clinical_config, segment_cases
from bundle.clinical.registration import REFERENCE_ORDER, Registration, point_errors, reference_sequence, register_rigid
from bundle.clinical.series import find_series, name_series, read_series
from bundle.clinical.studies import drawn_transform, make_study
from bundle.conventions import (
    DEFAULT_MODALITIES,
    NETWORK_REGIONS,
    REPORT_REGIONS,
    combination_name,
    modality_combinations,
)
from bundle.errors import install_excepthook
from bundle.metadata import EXPECTED_DICE_KEY
from bundle.metrics import binary_dice, score_label_maps

__all__ = ["EXTRACTORS", "prepare_study", "measure", "format_tables", "main"]

logger = logging.getLogger(__name__)

EXTRACTORS = ("hd-bet", "deepbet")
"""The brain extractors measured on every reference series."""


def prepare_study(study: Path, atlas, rules: list, out: Path, method: str = "hd-bet") -> dict[str, Any]:
    """Every reference's stages for one study; atlas-grid files under ``out/<reference>/<study>/``.

    Both extractors of :data:`EXTRACTORS` run on every reference and are scored; the pipeline goes on with ``method``'s
    mask.

    Returns:
        ``{"registration_mm": {pair: median error}, "brain_dice": {reference: {extractor: Dice}},
        "seconds": {stage: s}}`` (``brain <extractor>`` stages).
    """
    import SimpleITK as sitk

    record = json.loads((study / "truth" / "study.json").read_text())
    found = name_series(find_series(study / "dicom"), rules, DEFAULT_MODALITIES)
    images = {s: read_series(found.named[s]) for s in found.named}
    truth_brain = sitk.ReadImage(str(study / "truth" / "atlas_brain.nii.gz"))
    voxels = np.argwhere(sitk.GetArrayFromImage(truth_brain) > 0)[::50, ::-1].astype(float)
    atlas_points = [truth_brain.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels]
    result: dict[str, Any] = {"registration_mm": {}, "brain_dice": {}, "seconds": {}}
    seconds = {"registration": 0.0, **{f"brain {e}": 0.0 for e in EXTRACTORS}, "atlas": 0.0}
    for reference in REFERENCE_ORDER:
        into_reference = drawn_transform(record, reference).GetInverse()
        points = np.asarray([into_reference.TransformPoint(p) for p in atlas_points])
        registrations = {}
        start = time.perf_counter()
        for sequence in DEFAULT_MODALITIES:
            if sequence == reference:
                continue
            registrations[sequence] = register_rigid(images[reference], images[sequence])
            truth = sitk.CompositeTransform(
                [drawn_transform(record, sequence).GetInverse(), drawn_transform(record, reference)]
            )
            errors = point_errors(registrations[sequence].transform, truth, points)
            result["registration_mm"][f"{sequence}->{reference}"] = float(np.median(errors))
        seconds["registration"] += time.perf_counter() - start
        truth_mask = sitk.GetArrayFromImage(
            sitk.Resample(truth_brain, images[reference], drawn_transform(record, reference), sitk.sitkNearestNeighbor)
        )
        masks = {}
        for extractor in EXTRACTORS:
            start = time.perf_counter()
            masks[extractor] = extract_brain(images[reference], extractor)
            seconds[f"brain {extractor}"] += time.perf_counter() - start
        result["brain_dice"][reference] = {
            extractor: binary_dice(sitk.GetArrayFromImage(mask) > 0, truth_mask > 0)
            for extractor, mask in masks.items()
        }
        case = out / reference / study.name
        if (case / "atlas_to_reference.tfm").exists():  # a resumed measurement: the registrations are seeded
            continue
        brain = masks[method] if method in masks else extract_brain(images[reference], method)  # e.g. "none"
        start = time.perf_counter()
        alignment = align_to_atlas(images[reference], brain, atlas)
        registrations[reference] = Registration(sitk.Euler3DTransform(), float("nan"), 0)
        on_atlas = to_atlas(images, registrations, alignment, atlas, brain)
        seconds["atlas"] += time.perf_counter() - start
        case.mkdir(parents=True, exist_ok=True)
        for sequence, image in on_atlas.items():
            sitk.WriteImage(image, str(case / f"{study.name}_{sequence}.nii.gz"))
        sitk.WriteTransform(alignment.transform, str(case / "atlas_to_reference.tfm"))
    result["seconds"] = {stage: value / len(REFERENCE_ORDER) for stage, value in seconds.items()}
    return result


def _link_case(target: Path, name: str, files: dict[str, Path]) -> None:
    """``target/<name>_<sequence>.nii.gz`` linked to each ``{sequence: file}``: one BraTS case of those sequences."""
    target.mkdir(parents=True)
    for sequence, file in files.items():
        (target / f"{name}_{sequence}.nii.gz").symlink_to(file)


def measure(
    studies: int = 20,
    seed: int = 1000,
    spacing: float = 2.0,
    coarsen: float = 2.0,
    out: str | Path = "eval/clinical",
    ckpt_path: str | Path | None = None,
    metadata_file: str | Path | None = None,
) -> dict[str, Any]:
    """Make ``studies`` studies, run every reference's stages and every combination in both arms; write
    ``out/clinical.json`` and ``out/clinical.md``. A measurement stopped part-way resumes in the same ``out``: the
    studies prepared are kept (``out/prepared/``), the runs made again.

    Args:
        studies: how many phantom studies (seeds ``seed``, ``seed + 1``, ...; the demo's training cases use seeds 0-39).
        seed: the first study's seed.
        spacing: the phantoms' atlas grid in mm.
        coarsen: native voxel sizes times this.
        out: folder (created; see above for one that exists).
        ckpt_path: the model (default: models/model.pt).
        metadata_file: its metadata.json, whose Dice table the advice reads (default: configs/metadata.json).
    """
    import SimpleITK as sitk

    out = Path(out).resolve()  # the runs link to the atlas-grid files
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(ckpt_path or BUNDLE_ROOT / "models" / "model.pt")
    metadata_file = Path(metadata_file or BUNDLE_ROOT / "configs" / "metadata.json")
    config = read_clinical_config()
    atlas = load_atlas()
    prepared: dict[str, Any] = {}
    names = []
    for index in range(studies):
        name = f"study_{seed + index:04d}"
        names.append(name)
        record = out / "prepared" / f"{name}.json"
        if record.exists():
            prepared[name] = json.loads(record.read_text())
            continue
        if not (out / "studies" / name).exists():
            make_study(out / "studies" / name, seed=seed + index, spacing=spacing, coarsen=coarsen)
        start = time.perf_counter()
        prepared[name] = prepare_study(
            out / "studies" / name, atlas, config["series_rules"], out / "atlas", config["brain_extraction"]
        )
        record.parent.mkdir(exist_ok=True)
        record.write_text(json.dumps(prepared[name]))
        logger.info(f"{name}: prepared in {time.perf_counter() - start:.0f} s")
    rows = []
    shutil.rmtree(out / "runs", ignore_errors=True)
    for combination in modality_combinations(DEFAULT_MODALITIES):
        label = combination_name(combination)
        reference = reference_sequence(combination)
        for arm in ("native", "preprocessed"):
            cases = out / "runs" / arm / label / "cases"
            for name in names:
                if arm == "native":
                    files = {s: out / "atlas" / reference / name / f"{name}_{s}.nii.gz" for s in combination}
                else:
                    files = {s: out / "studies" / name / "truth" / f"atlas_{s}.nii.gz" for s in combination}
                _link_case(cases / name, name, files)
            written = segment_cases(cases, out / "runs" / arm / label / "labels", ckpt_path, BUNDLE_ROOT, metadata_file)
            for path in written:
                name = path.name.split(f"_{combination[0]}_seg")[0]
                study = out / "studies" / name
                if arm == "native":
                    transform = sitk.ReadTransform(str(out / "atlas" / reference / name / "atlas_to_reference.tfm"))
                    alignment = Registration(transform, float("nan"), 0)
                    grid = sitk.ReadImage(str(study / "truth" / f"{reference}_label.nii.gz"))
                    predicted = sitk.GetArrayFromImage(to_native(sitk.ReadImage(str(path)), grid, alignment))
                    truth = sitk.GetArrayFromImage(grid)
                    voxel = grid.GetSpacing()[::-1]
                else:
                    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
                    truth_image = sitk.ReadImage(str(study / "truth" / "atlas_label.nii.gz"))
                    truth, voxel = sitk.GetArrayFromImage(truth_image), truth_image.GetSpacing()[::-1]
                dice = score_label_maps(predicted, truth, voxel, lesion_wise=False)["dice"]
                rows.append(
                    {
                        "study": name,
                        "combination": label,
                        "arm": arm,
                        **{f"dice_{r}": float(dice[NETWORK_REGIONS.index(r)]) for r in REPORT_REGIONS},
                    }
                )
    table = json.loads(metadata_file.read_text()).get(EXPECTED_DICE_KEY)
    results = {
        "studies": studies,
        "seed": seed,
        "spacing": spacing,
        "coarsen": coarsen,
        "rows": rows,
        "prepared": prepared,
        "advice_table": table,
    }
    (out / "clinical.json").write_text(json.dumps(results, indent=1))
    (out / "clinical.md").write_text(format_tables(results))
    return results


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray([v for v in values if not np.isnan(v)], float)
    mean = float(values.mean()) if values.size else float("nan")
    return mean, float(values.std(ddof=1)) if values.size > 1 else float("nan")


def format_tables(results: dict[str, Any]) -> str:
    """Markdown: registration and brain-mask summary, stage times, the 15-combination table, the advice's agreement."""
    prepared = results["prepared"].values()
    errors: dict[str, list[float]] = {}
    for entry in prepared:
        for pair, value in entry["registration_mm"].items():
            errors.setdefault(pair.split("->")[1], []).append(value)
    lines = [
        f"{results['studies']} phantom studies (seeds {results['seed']}-{results['seed'] + results['studies'] - 1}), "
        f"atlas grid {results['spacing']} mm, native voxels {results['coarsen']}x the protocols'.",
        "",
        "| reference | registration error, median over brain points (mm): median, max over pairs | "
        + " | ".join(f"brain-mask Dice ({e}): mean, min" for e in EXTRACTORS)
        + " |",
        "|---|---|" + "---|" * len(EXTRACTORS),
    ]
    for reference in REFERENCE_ORDER:
        cells = [f"{np.median(errors[reference]):.2f}, {np.max(errors[reference]):.2f}"]
        for extractor in EXTRACTORS:
            brain = [entry["brain_dice"][reference][extractor] for entry in prepared]
            cells.append(f"{np.mean(brain):.3f}, {np.min(brain):.3f}")
        lines.append(f"| {reference} | " + " | ".join(cells) + " |")
    timed = [entry for entry in prepared if entry["seconds"]["atlas"] > 0]
    if timed:
        seconds = {stage: np.mean([entry["seconds"][stage] for entry in timed]) for stage in timed[0]["seconds"]}
        lines += [
            "",
            f"Seconds per study and reference ({len(timed)} studies timed): "
            + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
            + ".",
        ]
    lines.append("")
    lines += [
        "| combination | native WT | preprocessed WT | WT native - preprocessed, per study: mean ± standard error | "
        "native TC | preprocessed TC | native ET | preprocessed ET |",
        "|---|---|---|---|---|---|---|---|",
    ]
    measured: dict[str, dict[str, float]] = {}
    for combination in modality_combinations(DEFAULT_MODALITIES):
        label = combination_name(combination)
        cells = []
        for region in ("WT", "TC", "ET"):
            arms = {
                arm: {
                    r["study"]: r[f"dice_{region}"]
                    for r in results["rows"]
                    if r["combination"] == label and r["arm"] == arm
                }
                for arm in ("native", "preprocessed")
            }
            means = {arm: _mean_std(list(dice.values())) for arm, dice in arms.items()}
            cells += [f"{mean:.3f} ± {std:.3f}" for mean, std in means.values()]
            measured.setdefault(label, {})[region] = means["native"][0]
            if region == "WT":
                mean, std = _mean_std([arms["native"][s] - arms["preprocessed"][s] for s in arms["native"]])
                cells.append(f"{mean:+.3f} ± {std / np.sqrt(len(arms['native'])):.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = results.get("advice_table")
    if table:
        predicted, observed = [], []
        for combination in modality_combinations(DEFAULT_MODALITIES):
            for sequence in DEFAULT_MODALITIES:
                if sequence in combination:
                    continue
                bigger = combination_name([m for m in DEFAULT_MODALITIES if m in (*combination, sequence)])
                for region in REPORT_REGIONS:
                    before, after = (
                        table["dice"][combination_name(combination)][region][0],
                        table["dice"][bigger][region][0],
                    )
                    if before is None or after is None:
                        continue
                    predicted.append(after - before)
                    observed.append(measured[bigger][region] - measured[combination_name(combination)][region])
        predicted, observed = np.asarray(predicted), np.asarray(observed)
        same_sign = np.mean(np.sign(predicted) == np.sign(observed))
        lines += [
            "",
            f"Advice: over {predicted.size} (combination, added sequence, region) gains, the model's table "
            f"({table['split']} split, {table['cases']} cases) against the native-space gains measured here: "
            f"Pearson r {np.corrcoef(predicted, observed)[0, 1]:.2f}, same sign {same_sign:.0%}, "
            f"mean absolute difference {np.mean(np.abs(predicted - observed)):.3f}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--coarsen", type=float, default=2.0)
    parser.add_argument("--out", default="eval/clinical")
    parser.add_argument("--ckpt_path", default=None)
    parser.add_argument("--metadata_file", default=None)
    args = parser.parse_args(argv)
    install_excepthook()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    results = measure(args.studies, args.seed, args.spacing, args.coarsen, args.out, args.ckpt_path, args.metadata_file)
    print(format_tables(results))


if __name__ == "__main__":
    main()
