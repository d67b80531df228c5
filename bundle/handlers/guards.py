"""Handlers that stop a run cleanly: on a non-finite loss, and on a user error raised inside an engine.

A NaN loss poisons every weight within one optimiser step, and a run that goes on saves a "best" model
of NaNs and exits 0. :class:`StopOnNonFiniteLoss` stops at the first such iteration with an error naming
the cases of the batch. MONAI's ``StatsHandler`` logs any exception raised in an engine with its full
traceback; :class:`ReraiseErrors`, attached before it, lets the bundle's one-line errors through
untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine, Events

from bundle.errors import InputError
from bundle.handlers.stats import loss_terms

__all__ = ["StopOnNonFiniteLoss", "ReraiseErrors", "batch_cases"]


def batch_cases(batch: Any) -> list[str]:
    """Case names of a collated batch (its ``case`` entry), for error messages; ``[]`` when it has none."""
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        return [case for item in batch for case in batch_cases(item)]
    if not isinstance(batch, Mapping):
        return []
    cases = batch.get("case", [])
    return [str(cases)] if isinstance(cases, str) else [str(case) for case in cases]


class StopOnNonFiniteLoss:
    """Stop training with an :class:`InputError` at the first iteration whose loss is NaN or infinite.

    The error names the epoch, the iteration, the loss terms and the batch's cases, and is raised
    before the epoch ends, so no checkpoint of the diverged weights is written.

    Example:
        >>> StopOnNonFiniteLoss().attach(trainer)  # doctest: +SKIP
    """

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        terms = loss_terms(engine.state.output)
        if all(math.isfinite(value) for value in terms.values()):
            return
        cases = sorted(set(batch_cases(engine.state.batch)))
        shown = ", ".join(f"{key} {value:g}" for key, value in terms.items())
        raise InputError(
            f"the loss is not finite at epoch {engine.state.epoch}, iteration {engine.state.iteration} ({shown}; "
            f"cases {', '.join(cases) or 'unknown'}); training stopped and no checkpoint of these weights was written. "
            "Lower learning_rate, turn amp off, or check those cases' images; then run again (--resume false to "
            "start over)."
        )


class ReraiseErrors:
    """Re-raise an exception raised in an engine as it is, without the engine's logs repeating it.

    Ignite hands an exception to the first ``EXCEPTION_RAISED`` handler only (it stops at the first that
    raises), so attached first this one decides: the bundle's :class:`InputError` reaches the command
    line's one-line message, and any other error Python's own traceback, each printed once (MONAI's
    ``StatsHandler`` would log the traceback, and Ignite's engine logs the message twice, before).
    """

    REPEATS = ("Current run is terminating due to exception", "Engine run is terminating due to exception")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EXCEPTION_RAISED, self)
        engine.logger.addFilter(self._drop_repeats)

    def _drop_repeats(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.REPEATS)

    def __call__(self, engine: Engine, error: Exception) -> None:
        raise error
