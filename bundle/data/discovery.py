"""Find cases in real dataset layouts and keep one train / validation / test split per dataset."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bundle.conventions import DEFAULT_MODALITIES, LAYOUTS, MSD, NIFTI_SUFFIXES, check_modalities, file_stem
from bundle.errors import InputError, InputFileError
from bundle.flags import flag
from bundle.io import atomic_write_json, read_json, unreadable_reason

__all__ = [
    "holds_outputs",
    "case_folders",
    "detect_layout",
    "dataset_convention",
    "discover_cases",
    "split_cases",
    "split_from_file",
    "load_datalist",
    "optimism",
]

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "test")

DEFAULT_SPLIT_LISTS = {"training": "train", "validation": "validation"}
"""Which list of a case-name split file each split takes: the official LCKD lists' tuning split."""


def _file(case_dir: Path, layout: dict, name: str) -> Path | None:
    """The case's file for ``name``: anything at that name, even a folder or a broken link, which the dataset
    check then reports; only an absent name is a missing sequence."""
    for suffix in NIFTI_SUFFIXES:
        path = case_dir / f"{case_dir.name}{layout['separator']}{name}{suffix}"
        if os.path.lexists(path):
            return path
    return None


def _matches(case_dir: Path, modalities: Sequence[str]) -> bool:
    """Whether ``case_dir`` holds a sequence file named after it in any layout of :data:`LAYOUTS`."""
    return any(_file(case_dir, layout, layout["names"].get(m, m)) for layout in LAYOUTS.values() for m in modalities)


def case_folders(root: Path, modalities: Sequence[str] = DEFAULT_MODALITIES) -> list[tuple[Path, str | None]]:
    """``(case folder, group)`` for each case of ``root``: its folders, and one level down the folders of a grouping
    folder (BraTS 2018 and 2019 as downloaded: ``HGG/`` and ``LGG/``, each a folder of case folders; ``group`` is its
    name, ``None`` for a case at the top). A folder that is neither stays a case folder, which discovery reports.

    Example:
        >>> case_folders(Path("MICCAI_BraTS_2018_Data_Training"))  # doctest: +SKIP
        [(PosixPath('.../HGG/Brats18_2013_10_1'), 'HGG'), ..., (PosixPath('.../LGG/Brats18_2013_0_1'), 'LGG'), ...]
    """
    found: list[tuple[Path, str | None]] = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        inner = [] if _matches(folder, modalities) else sorted(d for d in folder.iterdir() if d.is_dir())
        if inner and any(_matches(d, modalities) for d in inner):
            found.extend((d, folder.name) for d in inner)
        else:
            found.append((folder, None))
    return found


OUTPUT_MARKERS = ("*_modalities.json", "checked_files.json", "mlruns.db", "*.pt", "report")
"""Files and folders the bundle writes (segmentation sidecars, a run's output folder, checkpoints)."""


def holds_outputs(folder: Path) -> bool:
    """Whether ``folder`` holds what the bundle writes rather than a case: any of :data:`OUTPUT_MARKERS`, or NIfTI files
    named after the dataset's other cases (segmentations, e.g. a BraTS submission folder of ``<case>.nii.gz``), as an
    ``--output_dir`` placed inside the dataset folder has.

    Example:
        >>> holds_outputs(Path("data/phantoms/segs"))  # doctest: +SKIP
        True
    """
    if any(next(folder.glob(pattern), None) is not None for pattern in OUTPUT_MARKERS):
        return True
    cases = {d.name for d in folder.parent.iterdir() if d.is_dir() and d != folder}
    return any(
        file_stem(f) in cases or any(file_stem(f).startswith(f"{case}_") for case in cases)
        for f in folder.iterdir()
        if f.name.endswith(NIFTI_SUFFIXES)
    )


def detect_layout(dataset_dir: str | os.PathLike, modalities: Sequence[str] = DEFAULT_MODALITIES) -> str:
    """Name of the layout in :data:`LAYOUTS` that the most case folders of ``dataset_dir`` follow (case folders one
    grouping level down count too, see :func:`case_folders`).

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist.
        ValueError: when no case folder matches any layout.
    """
    root = Path(dataset_dir)
    if root.exists() and not root.is_dir():
        raise InputError(
            f"dataset_dir {root} is a file, not a folder; point --dataset_dir at the folder that holds the case "
            "folders (or an MSD folder with dataset.json)."
        )
    if not root.is_dir():
        raise InputFileError(
            f"dataset_dir {root} does not exist; point --dataset_dir at a BraTS-style dataset folder, "
            f"or make one with `lckd-make-synthetic --out {root}`."
        )
    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        return MSD
    if not any(root.iterdir()):
        raise InputError(
            f"dataset_dir {root} is empty; copy a BraTS-style dataset there (one folder per case) or make one with "
            f"`lckd-make-synthetic --out {root}`."
        )
    case_dirs = [folder for folder, _ in case_folders(root, modalities)]
    counts = {
        name: sum(any(_file(d, layout, layout["names"].get(m, m)) for m in modalities) for d in case_dirs)
        for name, layout in LAYOUTS.items()
    }
    best = max(counts, key=lambda name: counts[name])
    if counts[best] == 0:
        expected = "; ".join(
            f"{name}: <case>/<case>{lay['separator']}{{"
            + ",".join(lay["names"].get(m, m) for m in modalities)
            + "}.nii.gz"
            for name, lay in LAYOUTS.items()
        )
        raise InputError(
            f"no case folder in {root} matches a known layout ({expected}, also one grouping folder down, as "
            "BraTS 2018's HGG/ and LGG/; or MSD Task01: dataset.json + imagesTr/)."
        )
    return best


def dataset_convention(
    dataset_dir: str | os.PathLike,
    dataset_format: str = "auto",
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    absent: str | None = None,
) -> str:
    """Label convention of a dataset (``"brats2021"``, ``"brats2023"`` or ``"msd"``), from its layout.

    ``absent``, when given, is the convention of a ``dataset_dir`` that does not exist (a config parsed to build its
    network, with no data at hand).
    """
    if absent is not None and not os.path.isdir(dataset_dir):
        return absent
    layout = detect_layout(dataset_dir, modalities) if dataset_format == "auto" else dataset_format
    if layout == MSD:
        return MSD
    if layout not in LAYOUTS:
        raise InputError(f"dataset_format must be 'auto', {MSD!r} or one of {list(LAYOUTS)}, got {dataset_format!r}.")
    return LAYOUTS[layout]["convention"]


def _discover_msd(root: Path, modalities: Sequence[str]) -> list[dict]:
    if len(modalities) != 4:
        raise InputError(
            f"MSD Task01 images have 4 channels (FLAIR, T1w, T1gd, T2w); got modalities {list(modalities)}."
        )
    index = read_json(root / "dataset.json")
    if not isinstance(index, dict) or not isinstance(index.get("training", []), list):
        raise InputError(
            f'{root / "dataset.json"} must be a JSON object whose "training" is a list of image/label entries '
            "(the MSD Task01 format); restore the file from the dataset."
        )
    cases = []
    for entry in index.get("training", []):
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            raise InputError(
                f"{root / 'dataset.json'} has a training entry without an image and a label ({entry!r}); "
                'each must be {"image": "./imagesTr/<case>.nii.gz", "label": "./labelsTr/<case>.nii.gz"}.'
            )
        image, label = root / entry["image"], root / entry["label"]
        for path in (image, label):
            if unreadable_reason(path) == "absent":
                raise InputFileError(
                    f"{root / 'dataset.json'} lists {path}, which does not exist; restore it or remove the entry."
                )
        cases.append({"case": file_stem(image), "image": str(image), "label": str(label)})
    if not cases:
        raise InputError(f"{root / 'dataset.json'} lists no training case.")
    return cases


def discover_cases(
    dataset_dir: str | os.PathLike,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    dataset_format: str = "auto",
    exclude: Sequence[str | os.PathLike] = (),
) -> list[dict]:
    """One data dict per case: ``{"case", <modality>: path, ..., "label": path, "mask"}``, and ``"group"`` for a case
    found in a grouping folder (BraTS 2018's ``HGG/`` and ``LGG/``, see :func:`case_folders`).

    A modality whose file is absent has no key in the dict and ``False`` in ``mask`` (one flag per
    modality, in ``modalities`` order); ``label`` is absent when the case has no segmentation. MSD
    cases are ``{"case", "image": 4D path, "label"}``: a missing sequence there is an all-zero channel.

    Args:
        dataset_dir: folder holding one folder per case, or grouping folders of case folders.
        modalities: modality names in canonical order.
        dataset_format: a key of :data:`LAYOUTS` or ``"auto"`` to detect it.
        exclude: folders of the run itself (its ``output_dir``, ``ckpt_dir``, ``cache_dir``), never cases; a folder
            holding segmentations or run outputs (:func:`holds_outputs`) is skipped too.

    Raises:
        ValueError: unknown ``dataset_format``, or a case folder without any modality file.
    """
    modalities = check_modalities(modalities)
    if dataset_format == "auto":
        dataset_format = detect_layout(dataset_dir, modalities)
    if dataset_format == MSD:
        return _discover_msd(Path(dataset_dir), modalities)
    if dataset_format not in LAYOUTS:
        raise InputError(f"dataset_format must be 'auto', {MSD!r} or one of {list(LAYOUTS)}, got {dataset_format!r}.")
    layout = LAYOUTS[dataset_format]
    own = {Path(folder).resolve() for folder in exclude if folder}
    cases = []
    for case_dir, group in case_folders(Path(dataset_dir), modalities):
        if case_dir.resolve() in own:
            continue
        item: dict = {"case": case_dir.name}
        for modality in modalities:
            path = _file(case_dir, layout, layout["names"].get(modality, modality))
            if path is not None:
                item[modality] = str(path)
        if len(item) == 1:
            if not os.access(case_dir, os.R_OK | os.X_OK):
                raise InputError(
                    f"case folder {case_dir} cannot be read (permission denied); give this user read access to it "
                    "(chmod/chown), or move it out of dataset_dir."
                )
            if holds_outputs(case_dir):
                logger.info(f"skipping {case_dir}: it holds segmentations or run outputs, not a case")
                continue
            expected = [f"{case_dir.name}{layout['separator']}{layout['names'].get(m, m)}.nii.gz" for m in modalities]
            raise InputError(
                f"case folder {case_dir} has no modality file; expected at least one of {expected}. "
                "Name its images as the layout does, or move the folder out of dataset_dir."
            )
        label = _file(case_dir, layout, layout["label"])
        if label is not None:
            item["label"] = str(label)
        item["mask"] = [modality in item for modality in modalities]
        if group is not None:
            item["group"] = group
        cases.append(item)
    return cases


def split_cases(
    cases: Sequence[dict], val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
) -> dict[str, list[dict]]:
    """Shuffle ``cases`` with ``seed`` and cut them into disjoint training / validation / test lists.

    Validation and test get ``round(fraction * len(cases))`` cases, at least one each when their
    fraction is positive; training keeps the rest and must keep at least one.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got {val_fraction} and {test_fraction}."
        )
    order = list(cases)
    random.Random(seed).shuffle(order)
    sizes = [max(1, round(f * len(order))) if f > 0 else 0 for f in (val_fraction, test_fraction)]
    if sum(sizes) >= len(order):
        raise InputError(
            f"{len(order)} cases are too few for val_fraction={val_fraction} and test_fraction={test_fraction}: "
            f"training would get none. Add cases or lower the fractions."
        )
    n_val, n_test = sizes
    return {"training": order[n_val + n_test :], "validation": order[:n_val], "test": order[n_val : n_val + n_test]}


def _relative(item: dict, root: Path, keys: Sequence[str]) -> dict:
    return {k: os.path.relpath(v, root) if k in keys else v for k, v in item.items()}


def _case_key(item: Mapping[str, Any]) -> str:
    return str(item.get("case") or item.get("label") or item.get("image") or json.dumps(item, sort_keys=True))


def _shared_cases(datalist: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[tuple[str, str, str]]:
    """``(case, first split, later split)`` for every case a datalist puts in a second split, in split order."""
    seen: dict[str, str] = {}
    shared = []
    for split in SPLITS:
        for item in datalist.get(split, []):
            case = _case_key(item)
            if seen.get(case, split) != split:
                shared.append((case, seen[case], split))
            seen.setdefault(case, split)
    return shared


def _check_repeats(datalist: Mapping[str, Sequence[Mapping[str, Any]]], source: Path) -> None:
    """Refuse a case listed twice in one split: it would be trained on, or scored, twice."""
    problems = []
    for split in SPLITS:
        names = [_case_key(item) for item in datalist.get(split, [])]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append(f"{split} lists {', '.join(repeated[:5])}{' ...' if len(repeated) > 5 else ''} twice")
    if problems:
        raise InputError(f"{source}: {'; '.join(problems)}; list each case once (remove the repeats from {source}).")


def _resolve_paths(item: Mapping[str, Any], root: Path, keys: Sequence[str], source: Path, fix: str) -> dict:
    """``item`` with its ``keys`` made absolute under ``root``; a file that does not exist is an error naming ``source``."""
    resolved = dict(item)
    for key in keys:
        if key in resolved:
            resolved[key] = str(root / resolved[key])
            if unreadable_reason(resolved[key]) == "absent":
                raise InputFileError(
                    f"{source} names {resolved[key]} (case {resolved.get('case', '?')}, key {key!r}), which does not "
                    f"exist; {fix}"
                )
    return resolved


def _check_stored_datalist(stored: Any, path: Path) -> None:
    """A datalist file's structure: an object of split -> list of case objects, no case in two splits."""
    fix = f"fix it, or delete {path} to split the dataset again."
    if not isinstance(stored, dict):
        raise InputError(f"{path} holds a JSON {type(stored).__name__}, not an object of splits {list(SPLITS)}; {fix}")
    problems = []
    for split in SPLITS:
        items = stored.get(split, [])
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            problems.append(f'"{split}" must be a list of case objects, got {json.dumps(items)[:60]}')
    if problems:
        raise InputError(f"{path}: {'; '.join(problems)}; {fix}")
    _check_repeats(stored, path)
    problems = [f"{case} ({first} and {split})" for case, first, split in _shared_cases(stored)]
    if problems:
        raise InputError(
            f"{path} puts cases in two splits: {', '.join(problems[:10])}; a case must be in one split only, "
            f"else the model is scored on cases it trained on. {fix[0].upper()}{fix[1:]}"
        )


def _overlap_problem(datalist: dict[str, list[dict]], path: Path, allow_overlap: bool) -> None:
    """Refuse cases that a split file puts in two splits; with ``allow_overlap`` only warn about training cases that
    are validated or tested too (the paper's train_all setting)."""
    pairs: dict[tuple[str, str], list[str]] = {}
    for case, first, split in _shared_cases(datalist):
        pairs.setdefault((first, split), []).append(case)
    for (first, split), cases in pairs.items():
        shared = sorted(cases)
        message = (
            f"{path} puts {len(shared)} of the {len(datalist[split])} {split} cases in {first} too "
            f"({', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''})"
        )
        if first != "training":
            raise InputError(f"{message}: a case is validated or tested once. Choose disjoint lists with split_lists.")
        if not allow_overlap:
            raise InputError(
                f"{message}: the model would be scored and its teachers elected on cases it trained on. Choose disjoint "
                "lists with split_lists, or set allow_split_overlap true for the paper's train_all setting."
            )
        logger.warning(
            f"{message}; allowed by allow_split_overlap (the paper's train_all setting): its {split} scores "
            "are not held-out scores."
        )


def split_from_file(
    dataset_dir: str | os.PathLike,
    split_file: str | os.PathLike,
    split_lists: dict[str, str] | None = None,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    dataset_format: str = "auto",
    allow_overlap: bool = False,
    exclude: Sequence[str | os.PathLike] = (),
) -> dict[str, list[dict]]:
    """The split that ``split_file`` prescribes, as ``{"training", "validation", "test"}`` lists of data dicts.

    Two formats: MONAI's decathlon datalist (splits of case objects with paths relative to ``dataset_dir``),
    or lists of case names, such as ``configs/splits/brats2018_lckd.json`` (the official LCKD code's lists),
    whose lists ``split_lists`` assigns to the splits (default :data:`DEFAULT_SPLIT_LISTS`).

    Raises:
        InputError: an unreadable file, a list it lacks, listed cases absent from ``dataset_dir`` (named), or a
            case in training and in validation/test unless ``allow_overlap`` (then a warning).
    """
    path = Path(split_file)
    stored = read_json(path)
    if not isinstance(stored, dict):
        raise InputError(f"{path} holds a JSON {type(stored).__name__}; a split file is an object of named lists.")
    lists = dict(split_lists or DEFAULT_SPLIT_LISTS)
    unknown = sorted(set(lists) - set(SPLITS))
    absent = [name for name in lists.values() if name not in stored]
    if unknown or absent:
        raise InputError(
            f"split_lists {lists} does not fit {path}: splits must be in {list(SPLITS)}"
            f"{f' (not {unknown})' if unknown else ''} and lists in {[k for k in stored if not k.startswith('_')]}"
            f"{f' (not {absent})' if absent else ''}."
        )
    root = Path(dataset_dir).resolve()
    datalist: dict[str, list[dict]] = {split: [] for split in SPLITS}
    if all(isinstance(entry, dict) for name in lists.values() for entry in stored[name]):
        for split, name in lists.items():
            for entry in stored[name]:
                item = _resolve_paths(
                    entry, root, [*modalities, "image", "label"], path, f"restore the file or correct {path}."
                )
                item.setdefault("case", file_stem(Path(item.get("label") or item.get("image") or "")))
                datalist[split].append(item)
    else:
        cases = {item["case"]: item for item in discover_cases(root, modalities, dataset_format, exclude)}
        missing = sorted({str(case) for name in lists.values() for case in stored[name] if case not in cases})
        if missing:
            raise InputError(
                f"{len(missing)} case(s) listed in {path} are not in {root}: {', '.join(missing[:10])}"
                f"{' ...' if len(missing) > 10 else ''}; point dataset_dir at the folder that holds them, or remove "
                "them from the list."
            )
        for split, name in lists.items():
            datalist[split] = [dict(cases[case]) for case in stored[name]]
    _check_repeats(datalist, path)
    _overlap_problem(datalist, path, allow_overlap)
    logger.info(
        f"split from {path}: "
        + ", ".join(f"{split} {len(items)} ({lists.get(split, '-')})" for split, items in datalist.items())
    )
    return datalist


def load_datalist(
    dataset_dir: str | os.PathLike,
    datalist_file: str | os.PathLike | None = None,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    dataset_format: str = "auto",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
    split_lists: dict[str, str] | None = None,
    allow_split_overlap: bool | str = False,
    exclude: Sequence[str | os.PathLike] = (),
) -> dict[str, list[dict]]:
    """The dataset's split, read from ``datalist_file`` or made once and written there.

    A ``split_file`` (see :func:`split_from_file`) takes precedence: the split it prescribes is used as it is
    and ``datalist_file`` is neither read nor written.

    The file (default ``<dataset_dir>/datalist.json``) uses MONAI's decathlon datalist format with
    paths relative to ``dataset_dir``, so the split is reused by every later run and training,
    validation and test cases never mix. A read-only dataset folder keeps the split in memory.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` with absolute paths.

    Raises:
        FileNotFoundError: when the datalist names a file that does not exist.
    """
    modalities = check_modalities(modalities)
    allow_split_overlap = flag(allow_split_overlap, "allow_split_overlap")
    if split_file:
        return split_from_file(
            dataset_dir, split_file, split_lists, modalities, dataset_format, allow_split_overlap, exclude
        )
    root = Path(dataset_dir).resolve()
    path_keys = [*modalities, "image", "label"]
    datalist_path = Path(datalist_file) if datalist_file else root / "datalist.json"
    if datalist_path.is_file():
        stored = read_json(datalist_path)
        _check_stored_datalist(stored, datalist_path)
        if list(stored.get("modalities", modalities)) != list(modalities):
            raise InputError(
                f"{datalist_path} was made for modalities {stored['modalities']}, but modalities is {list(modalities)}; "
                f"use the same modalities, or delete {datalist_path} to split the dataset again."
            )
        fix = f"restore the file or delete {datalist_path} to split again."
        return {
            split: [_resolve_paths(item, root, path_keys, datalist_path, fix) for item in stored.get(split, [])]
            for split in SPLITS
        }
    datalist = split_cases(discover_cases(root, modalities, dataset_format, exclude), val_fraction, test_fraction, seed)
    stored = {split: [_relative(item, root, path_keys) for item in items] for split, items in datalist.items()}
    stored.update({"modalities": list(modalities), "seed": seed})
    try:
        atomic_write_json(datalist_path, stored)
    except OSError as error:
        logger.warning(f"could not write the split to {datalist_path} ({error}); it is kept in memory for this run.")
    return datalist


def optimism(datalist: Mapping[str, Sequence[Mapping[str, Any]]], split: str) -> str | None:
    """Why scores on ``split`` of ``datalist`` are not held-out scores, or ``None`` when they are.

    The validation split elected the teachers and selected ``models/model.pt``; the training split trained it; a
    test split that shares cases with either (a split file with ``allow_split_overlap``) is partly both.

    Example:
        >>> optimism({"training": [{"case": "a"}], "validation": [{"case": "b"}], "test": [{"case": "c"}]}, "test")
        >>> optimism({"validation": [{"case": "b"}]}, "validation")
        'elected the teachers and selected the model'
    """
    if split == "training":
        return "trained the model"
    if split == "validation":
        return "elected the teachers and selected the model"
    others = {str(item.get("case")) for name in ("training", "validation") for item in datalist.get(name, [])}
    shared = [str(item.get("case")) for item in datalist.get(split, []) if str(item.get("case")) in others]
    if shared:
        return f"shares {len(shared)} of its {len(datalist[split])} cases with the training or validation split"
    return None
