"""MLflow tracking of text state, such as the current teacher set, which MLflow metrics cannot hold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ignite.engine import Engine
from mlflow.entities import RunTag
from monai.handlers import MLFlowHandler

__all__ = ["TaggedMLFlowHandler"]


class TaggedMLFlowHandler(MLFlowHandler):
    """MONAI's ``MLFlowHandler`` that also records attributes of ``engine.state`` as MLflow run tags.

    MLflow metrics are numbers and a run's params cannot change, so a text value that changes during a
    run, like the teacher set after each re-election, is kept as a tag, updated at the end of every
    epoch (the run page shows the latest value). Everything else is MONAI's handler unchanged.

    Args:
        state_tags: names of ``engine.state`` attributes to record; unset or ``None`` attributes are skipped.
        kwargs: arguments of ``monai.handlers.MLFlowHandler``.

    Example:
        ``TaggedMLFlowHandler(state_tags=["teachers"], tracking_uri="sqlite:///eval/mlruns.db")`` attached
        to a trainer whose ``engine.state.teachers`` is ``"ET->t1ce, TC->t1ce, WT->flair"`` gives the run
        the tag ``teachers = ET->t1ce, TC->t1ce, WT->flair``.
    """

    def __init__(self, state_tags: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_tags = tuple(state_tags)

    def epoch_completed(self, engine: Engine) -> None:
        super().epoch_completed(engine)
        tags = [
            RunTag(name, str(getattr(engine.state, name)))
            for name in self.state_tags
            if getattr(engine.state, name, None) is not None
        ]
        if tags and self.cur_run is not None:
            self.client.log_batch(run_id=self.cur_run.info.run_id, metrics=[], params=[], tags=tags)
