"""Boolean settings as configs and command lines write them, read strictly."""

from __future__ import annotations

from typing import Any

from bundle.errors import InputError

__all__ = ["flag"]

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def flag(value: Any, key: str) -> bool:
    """A boolean setting as written in a config or on the command line, read strictly.

    ``python -m monai.bundle run --resume false`` hands the string ``"false"``, which Python reads as
    true; configs read every boolean key through this function instead.

    Args:
        value: a bool, 0 or 1, or one of true/false, 1/0, yes/no, on/off in any case.
        key: the setting's name, for the error message.

    Raises:
        InputError: for any other value, naming the key and the allowed values.

    Example:
        >>> flag("False", "resume"), flag(1, "mlflow"), flag(True, "amp")
        (False, True, True)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise InputError(f"--{key} must be true or false (also 1/0, yes/no, on/off), got {value!r}.")
