"""The one-shot election of ``elect.json`` as an Ignite engine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ignite.engine import Engine

from bundle.handlers.election import ElectionHandler

__all__ = ["ElectionEngine"]


class ElectionEngine(Engine):
    """One election as an Ignite engine: a single iteration that elects and publishes the result.

    ``elect.json`` runs it on a trained model; handlers (TensorBoard, MLflow) attach as to any engine
    and see ``engine.state.metrics`` (the single-modality Dice table) and ``engine.state.teachers``.

    Args:
        elector: the :class:`ElectionHandler` holding the network, the validation loader and the schedule.
        handlers: Ignite/MONAI handlers to attach, in order.
    """

    def __init__(self, elector: ElectionHandler, handlers: Sequence[Any] = ()) -> None:
        super().__init__(lambda engine, batch: elector.publish(engine, elector.elect()))
        self.elector = elector
        for handler in handlers:
            handler.attach(self)

    def run(self, data: Iterable | None = None, max_epochs: int = 1, **kwargs: Any) -> Any:  # type: ignore[override]
        """Elect once."""
        return super().run([None] if data is None else data, max_epochs=max_epochs, **kwargs)
