"""Check a workflow's settings before anything runs: every key's type and range, the command line's key names,
the memory one step needs, and the folders it writes.

``python -m monai.bundle run`` hands command-line values over as Python literals (``--max_epochs 2.5`` is a
float, ``--resume false`` the string ``"false"``) and accepts any key, so a typo such as ``--max_epoch 2``
would otherwise pass unnoticed. Each config's ``initialize`` calls :func:`bundle.runs.begin_run`, which checks the
settings the config defines (:func:`config_settings`) and lists every problem in one error before any data is read.

Where each check lives: a key that one constructor takes is checked by a function beside that constructor
(``check_fill``, ``check_levels``, ``check_ckd_weight``, ``check_cache``, ``check_elect_epoch``, ``check_modalities``
...), which the constructor calls and :func:`rules` calls too, earlier, so that a bad ``--fill`` is refused before
minutes of caching; this module holds the checks no constructor owns (the types and ranges of the other keys, the
relations between keys such as ``elect_epoch`` after ``max_epochs``, and the memory a step needs) and one
divisibility rule (:func:`bundle.networks.lckdnet.downsampling`) shared with the network and the inference window.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ReferenceResolver

from bundle.conventions import check_modalities
from bundle.data.caching import check_cache
from bundle.errors import InputError, check_whole_number, install_excepthook
from bundle.flags import flag
from bundle.handlers.dropping import check_schedule
from bundle.handlers.election import check_elect_epoch, check_reelect_every
from bundle.handlers.selection import selection_metric
from bundle.losses.ckd import check_ckd_reduction, check_ckd_weight
from bundle.memory import device_memory, step_memory
from bundle.metrics.scoring import check_rules
from bundle.networks.lckdnet import check_fill, check_levels, downsampling

__all__ = ["BOOLEAN_KEYS", "flag", "config_settings", "check_settings", "check_writable", "check_command_line", "rules"]

BOOLEAN_KEYS = (
    "resume",
    "mlflow",
    "shared_encoder",
    "amp",
    "distributed",
    "channels_last",
    "compile",
    "hd95",
    "lesion_wise",
    "allow_split_overlap",
    "allow_absent_modalities",
    "submission",
)
"""Keys read through :func:`flag`."""


def _whole(minimum: int) -> Callable[[Any], str | None]:
    return _checked_by(functools.partial(check_whole_number, "value", minimum=minimum), "value")


def _number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = True) -> Callable:
    def check(value: Any) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if ok:
            return None
        lower = f"{'>' if low_open else '>='} {low}"
        return f"a number {lower}" + (f" and {'<' if high_open else '<='} {high}" if high is not None else "")

    return check


def _ints(length: int | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        items = value if isinstance(value, (list, tuple)) else None
        if items and (length is None or len(items) == length) and all(_whole(1)(v) is None for v in items):
            return None
        return f"a list of {length or 'one or more'} whole numbers >= 1" + (", e.g. [128, 128, 128]" if length else "")

    return check


def _levels(value: Any) -> str | None:
    """kernel_size and strides: one int or one [x, y, z] list per level."""
    if isinstance(value, (list, tuple)) and value and all(_whole(1)(v) is None or _ints(3)(v) is None for v in value):
        return None
    return "a list with one whole number >= 1 (or one [x, y, z] list) per network level"


def _spacing(value: Any) -> str | None:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(_number(0, low_open=True)(v) is None for v in value)
    ):
        return None
    return "three voxel sizes in mm, each > 0, e.g. [1.0, 1.0, 1.0]"


def _device(value: Any) -> str | None:
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        return "a torch device such as 'cpu' or 'cuda:0'"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            return f"a device this machine has: it sees {count} CUDA GPU(s); use 'cpu'" + (
                f" or 'cuda:0'..'cuda:{count - 1}'" if count else ""
            )
    return None


def _checked_by(check: Callable[[Any], Any], key: str) -> Callable[[Any], str | None]:
    """The rule of a key whose constructor checks it: that check, run before any data is read, its one-line error
    ("<key> must be ..., got ...") turned into what the key must be."""

    def rule(value: Any) -> str | None:
        try:
            check(value)
        except (InputError, TypeError, ValueError) as error:
            return str(error).split(", got")[0].removeprefix(f"{key} must be ")
        return None

    return rule


def _boolean(value: Any) -> str | None:
    try:
        flag(value, "")
    except InputError:
        return "true or false (also 1/0, yes/no, on/off)"
    return None


@functools.cache
def rules() -> dict[str, Callable[[Any], str | None]]:
    """Key -> check returning ``None`` or what the key must be."""
    return {
        "max_epochs": _whole(1),
        "val_interval": _whole(1),
        "elect_epoch": _checked_by(check_elect_epoch, "elect_epoch"),
        "reelect_every": _checked_by(check_reelect_every, "reelect_every"),
        "warmup_epochs": _whole(0),
        "batch_size": _whole(1),
        "num_samples": _whole(1),
        "sw_batch_size": _whole(1),
        "num_workers": _whole(0),
        "log_every": _whole(1),
        "seed": _whole(0),
        "resamples": _whole(0),
        "min_component_voxels": _whole(0),
        "et_min_voxels": _whole(0),
        "learning_rate": _number(0, low_open=True),
        "ckd_weight": _checked_by(check_ckd_weight, "ckd_weight"),
        "overlap": _number(0, 1),
        "val_fraction": _number(0, 1),
        "test_fraction": _number(0, 1),
        "affine_tolerance": _number(0),
        "cache_rate": _number(0, 1, high_open=False),
        "zoom_prob": _number(0, 1, high_open=False),
        "intensity_prob": _number(0, 1, high_open=False),
        "patch_size": _ints(3),
        "pixdim": _spacing,
        "filters": _ints(),
        "kernel_size": _levels,
        "strides": _levels,
        "modalities": _checked_by(check_modalities, "modalities"),
        "device": _device,
        "fill": _checked_by(check_fill, "fill"),
        "dropping": _checked_by(check_schedule, "dropping"),
        "select_model": _checked_by(selection_metric, "select_model"),
        "ckd_reduction": _checked_by(check_ckd_reduction, "ckd_reduction"),
        "cache": _checked_by(check_cache, "cache"),
        "scoring": _checked_by(check_rules, "scoring"),
        **dict.fromkeys((*BOOLEAN_KEYS, "for_training"), _boolean),
    }


def _gb(size: float) -> str:
    return f"{size / 2**30:.1f} GB"


def _cross_checks(settings: Mapping[str, Any]) -> list[str]:
    """Problems between keys that each passed their own check."""
    problems = []
    patch, strides = settings.get("patch_size"), settings.get("strides")
    if patch is not None and strides is not None:
        factors = downsampling(strides)
        for axis, (size, factor) in enumerate(zip(patch, factors)):
            if size % factor:
                lower = max(factor, size // factor * factor)
                problems.append(
                    f"patch_size {list(patch)} is not divisible along axis {axis} by {factor}, the network's total "
                    f"downsampling (product of strides {list(strides)}); use a multiple of {factor}, e.g. {lower} or "
                    f"{lower + factor}."
                )
                break
    if all(settings.get(key) is not None for key in ("filters", "kernel_size", "strides")):
        try:
            check_levels(settings["filters"], settings["kernel_size"], settings["strides"])
        except InputError as error:
            problems.append(str(error))
    max_epochs = settings.get("max_epochs")
    elect_epoch = settings.get("elect_epoch")
    if max_epochs is not None and elect_epoch is not None and elect_epoch > max_epochs:
        problems.append(
            f"elect_epoch={elect_epoch} is after the last epoch (max_epochs={max_epochs}): no teacher would be "
            "elected and distillation would never run. Lower elect_epoch or raise max_epochs."
        )
    warmup = settings.get("warmup_epochs")
    if max_epochs is not None and warmup is not None and warmup >= max_epochs:
        problems.append(
            f"warmup_epochs={warmup} is not before the last epoch (max_epochs={max_epochs}): the model would "
            "never train with a missing sequence. Lower warmup_epochs (the official recipe: about 40 % of the "
            "training) or raise max_epochs."
        )
    if settings.get("val_fraction") is not None and settings.get("test_fraction") is not None:
        if settings["val_fraction"] + settings["test_fraction"] >= 1:
            problems.append(
                f"val_fraction + test_fraction must be below 1 (training needs cases), got "
                f"{settings['val_fraction']} + {settings['test_fraction']}."
            )
    problems.extend(_memory_problems(settings))
    return problems


def _memory_problems(settings: Mapping[str, Any]) -> list[str]:
    keys = ("patch_size", "filters", "modalities", "device")
    if any(settings.get(key) is None for key in keys):
        return []
    amp = flag(settings.get("amp", False), "amp")
    available = device_memory(settings["device"])
    problems = []
    common = (settings["patch_size"], len(settings["modalities"]), settings["filters"][0])
    runs = [("sw_batch_size", settings.get("sw_batch_size"), False)]
    if settings.get("batch_size") is not None and flag(settings.get("for_training", True), "for_training"):
        samples = settings["batch_size"] * settings.get("num_samples", 1)
        runs.insert(0, ("batch_size x num_samples", samples, True))
    for name, samples, training in runs:
        if samples is None:
            continue
        needed = step_memory(common[0], samples, common[1], common[2], training, amp)
        if needed > available:
            fits = max(8, int((available / needed) ** (1 / 3) * min(common[0])) // 16 * 16)
            problems.append(
                f"patch_size {list(common[0])} with {name} {samples} needs about {_gb(needed)} for one "
                f"{'training step' if training else 'sliding-window batch'} on {torch.device(settings['device'])}, "
                f"more than its {_gb(available)}; lower patch_size (e.g. [{fits}, {fits}, {fits}]) or {name}."
            )
    return problems


def check_settings(settings: Mapping[str, Any], writable: Sequence[str | os.PathLike] = ()) -> None:
    """Check a workflow's settings and output folders before anything expensive runs.

    Each key of ``settings`` that has a rule (:func:`rules`) is checked for type and range; then the
    relations between keys (patch size divisible by the network's downsampling, one kernel size and
    stride per level, elect and warm-up epochs before the last, split fractions) and the memory of one
    training step and one sliding-window batch against the device's memory.

    Args:
        settings: ``{key: resolved value}``, e.g. from :func:`config_settings`.
        writable: folders the workflow writes to; created if needed.

    Raises:
        InputError: listing every problem, each with the value given and what is allowed.

    Example:
        >>> check_settings({"patch_size": [128, 128, 128], "strides": [1, 2, 2, 2, 2], "max_epochs": 300})
    """
    problems = []
    for key, value in settings.items():
        rule = rules().get(key)
        expected = rule(value) if rule else None
        if expected:
            problems.append(f"--{key} must be {expected}; got {value!r}.")
    if not problems:
        problems = _cross_checks(settings)
    if problems:
        listed = "\n  - ".join(problems)
        raise InputError(f"{len(problems)} problem(s) in the settings:\n  - {listed}")
    check_writable(*writable)


def config_settings(*extra: str) -> dict[str, Any]:
    """The settings of the config being run, as its workflow reads them: every key with a rule (:func:`rules`)
    that the config defines, resolved (a ``$`` expression evaluated, an ``@`` reference followed, a command-line
    override applied), with ``patch_size`` and ``pixdim`` from ``model_preprocessing`` where the config has it (the
    model's record wins over the keys in inference, evaluation and election). Keys set to ``None`` are left out.

    Call it from a config expression (``initialize``, a handler's argument): the MONAI config parser evaluating that
    expression is found on the call stack and asked for the keys, so a config lists no settings of its own and a key
    added to :func:`rules` is checked in every config that has it.

    Args:
        extra: further keys to include although they have no rule, e.g. ``"dataset_dir"`` for MLflow's params.

    Returns:
        ``{key: value}``, in the order of :func:`rules` then ``extra``.

    Raises:
        RuntimeError: when not called while a MONAI config is being parsed.
    """
    resolver = _running_config()
    defined = [key for key in [*rules(), *extra] if resolver.get_item(key) is not None]
    settings = {key: resolver.get_resolved_content(key) for key in defined}
    if resolver.get_item("model_preprocessing") is not None:
        preprocessing = resolver.get_resolved_content("model_preprocessing")
        settings.update({key: preprocessing[key] for key in ("patch_size", "pixdim")})
    return {key: value for key, value in settings.items() if value is not None}


def _running_config() -> ReferenceResolver:
    """The resolver of the MONAI config whose expression is calling (MONAI 1.6's ``ReferenceResolver``, found as the
    ``self`` of a frame up the stack)."""
    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ReferenceResolver):
            return owner
        frame = frame.f_back
    raise RuntimeError(
        "config_settings() reads the config being parsed, so it must be called from a config expression such as "
        '"$bundle.runs.begin_run(...)"; from Python, pass the settings to check_settings() instead.'
    )


def check_writable(*folders: str | os.PathLike) -> None:
    """Create each folder if needed and check a file can be written there.

    Raises:
        InputError: naming the folder and the reason.
    """
    for folder in folders:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise InputError(
                f"cannot write to {folder} ({error.strerror or error}); point it at a writable folder "
                "(e.g. --ckpt_dir, --output_dir) or fix its permissions."
            ) from None


def _option_names(argv: Sequence[str]) -> list[str]:
    return [token[2:].split("=", 1)[0] for token in argv if token.startswith("--") and len(token) > 2]


def _option_value(argv: Sequence[str], name: str) -> str | None:
    for index, token in enumerate(argv):
        if token == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith(f"--{name}="):
            return token.split("=", 1)[1]
    return None


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Refuse a ``monai.bundle run`` command line that names a key no config file of the run has; print errors in one line.

    MONAI adds unknown keys to the config silently, so ``--max_epoch 2`` would train the default 300
    epochs. Known keys are the top-level keys of the ``--config_file`` files (and of ``--args_file``)
    and the arguments of ``monai.bundle run`` itself; ``--a::b`` counts as ``a``.

    Args:
        argv: the command line; default ``sys.argv``. Does nothing when it has no ``--config_file``
            (the workflow was started from Python, whose keyword arguments are checked by Python);
            otherwise it also installs :func:`bundle.errors.excepthook` for this command.

    Raises:
        InputError: naming each unknown key and the closest known one.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.scripts import run

    argv = list(sys.argv if argv is None else argv)
    files = _option_value(argv, "config_file")
    if files is None:
        return
    install_excepthook()
    known = set(inspect.signature(run).parameters) - {"override"}
    try:
        known.update(ConfigParser.load_config_files(_parse_list(files)))
        args_file = _option_value(argv, "args_file")
        if args_file:
            known.update(ConfigParser.load_config_file(args_file))
    except (OSError, ValueError):
        return  # MONAI reports a missing or malformed config file itself
    _check_workflow_files(_parse_list(files))
    unknown = [name for name in _option_names(argv) if name.split("::")[0] not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name.split("::")[0], sorted(known), n=1)
            hints.append(f"--{name}" + (f" (did you mean --{close[0]}?)" if close else ""))
        raise InputError(
            f"unknown setting {', '.join(hints)}: no config of this run has it, so it would change nothing. "
            "Fix the name; the settings are the top-level keys of the config files."
        )


WORKFLOWS = ("train.json", "inference.json")
"""The bundle's standalone configs; every other config of the bundle is an override merged over train.json."""


def _check_workflow_files(files: Sequence[str]) -> None:
    """Refuse a run made of override configs alone (``evaluate.json`` without ``train.json`` would fail on a missing
    key deep in MONAI), naming the command that merges them over train.json."""
    names = [Path(file).name for file in files]
    if names and not any(name in WORKFLOWS for name in names):
        merged = ",".join(f"'{file}'" for file in ["configs/train.json", *files])
        raise InputError(
            f"{', '.join(files)} {'is an override' if len(files) == 1 else 'are overrides'} merged over train.json, "
            f'not a workflow of its own; run: python -m monai.bundle run --config_file "[{merged}]" (and the same '
            "other options)."
        )


def _parse_list(value: str) -> list[str]:
    """``--config_file`` as a list: one path, a comma-separated list, or a Python list literal."""
    text = value.strip()
    if text.startswith("["):
        return [str(item) for item in ast.literal_eval(text)]
    return [part.strip() for part in text.split(",") if part.strip()]
