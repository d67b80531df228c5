"""Errors about the user's data or settings, shown as one clear message instead of a traceback.

Every check of the bundle raises :class:`InputError` (a ``ValueError``) or :class:`InputFileError`
(also a ``FileNotFoundError``) with what file or key is wrong, what was found, what is allowed and
how to fix it. ``python -m monai.bundle run`` wraps errors raised in config expressions and
transforms in ``RuntimeError``\\ s; :func:`excepthook` finds the ``InputError`` behind them and prints
its message alone. The entry points install it (importing the package under ``python -m monai.bundle``, which
every config does first, and each script's ``main``); any other process that imports the package (a MONAI Label
server) keeps its own hook. Set ``LCKD_TRACEBACK=1`` to see
the full traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import TracebackType

__all__ = [
    "InputError",
    "InputFileError",
    "check_choice",
    "check_whole_number",
    "brief",
    "input_error_of",
    "excepthook",
    "install_excepthook",
]

TRACEBACK_ENV = "LCKD_TRACEBACK"


class InputError(ValueError):
    """A problem with the user's data, files or settings; the message says how to fix it."""


class InputFileError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist."""


def check_choice(key: str, value: object, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``.

    Raises:
        InputError: ``"<key> must be one of [...], got <value>."``

    Example:
        >>> check_choice("fill", "zeros", ("all_levels", "bottleneck"))
        Traceback (most recent call last):
        ...
        bundle.errors.InputError: fill must be one of ['all_levels', 'bottleneck'], got 'zeros'.
    """
    if value not in allowed:
        raise InputError(f"{key} must be one of {list(allowed)}, got {value!r}.")
    return str(value)


def check_whole_number(key: str, value: object, minimum: int, meaning: str | None = None) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``.

    Raises:
        InputError: ``"<key> must be a whole number >= <minimum> (<meaning>), got <value>."``

    Example:
        >>> check_whole_number("elect_epoch", 2.5, 1)
        Traceback (most recent call last):
        ...
        bundle.errors.InputError: elect_epoch must be a whole number >= 1, got 2.5.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        why = f" ({meaning})" if meaning else ""
        raise InputError(f"{key} must be a whole number >= {minimum}{why}, got {value!r}.")
    return value


def brief(error: BaseException, limit: int = 160) -> str:
    """``"<type>: <first sentence of the message>"``, for quoting a library's error inside a one-line message."""
    text = str(error).strip()
    first = text.split(". ")[0].splitlines()[0][:limit] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def input_error_of(error: BaseException | None) -> InputError | None:
    """The :class:`InputError` that caused ``error`` (itself, or along its ``__cause__``/``__context__`` chain)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def excepthook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    """Print an uncaught :class:`InputError` as ``error: <message>``; anything else as Python would."""
    cause = input_error_of(error)
    if cause is None or os.environ.get(TRACEBACK_ENV):
        sys.__excepthook__(kind, error, traceback)
        return
    print(f"error: {cause}\n(set {TRACEBACK_ENV}=1 to see the traceback)", file=sys.stderr)


def install_excepthook() -> None:
    """Use :func:`excepthook` unless another tool (IPython, a debugger) has installed its own hook."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = excepthook
