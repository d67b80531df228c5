"""The learning-rate schedule of the official LCKD code's two runs, which PyTorch's schedulers lack."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from bundle.errors import InputError

__all__ = ["TwoStagePoly", "two_stage_poly_lr"]


class TwoStagePoly:
    """Learning-rate factor of the official LCKD schedule, per epoch: poly decay over ``first_stage`` epochs, then,
    from ``first_stage`` on, the point the poly curve over ``total`` epochs has reached (continued, not restarted).

    The official ``run.sh`` trains 80,000 iterations with ``lr_poly(1e-2, i, 80000, 0.9)``, then reloads that model
    and trains iterations 79,999 to 114,999 with ``lr_poly(1e-2, i, 115000, 0.9)``: the second run starts at
    1e-2 * (1 - 80,000 / 115,000) ** 0.9, about 3.4e-3. A class, not a lambda, so that ``LambdaLR`` saves it with
    the scheduler's state and a resumed training keeps it.

    Args:
        first_stage: epochs of the first run (every sequence present); 0 gives one poly curve over ``total``.
        total: epochs of the second run's curve, counted from the start of training.
        power: the poly exponent.

    Example:
        >>> schedule = TwoStagePoly(first_stage=4, total=10, power=1.0)
        >>> [round(schedule(epoch), 2) for epoch in (0, 2, 3, 4, 9)]
        [1.0, 0.5, 0.25, 0.6, 0.1]
    """

    def __init__(self, first_stage: int, total: int, power: float = 0.9) -> None:
        if not 0 <= first_stage <= total or total < 1:
            raise InputError(
                f"the two-stage schedule needs 0 <= first_stage <= total epochs and total >= 1, got "
                f"first_stage={first_stage}, total={total}."
            )
        self.first_stage, self.total, self.power = int(first_stage), int(total), float(power)

    def __call__(self, epoch: int) -> float:
        length = self.first_stage if epoch < self.first_stage else self.total
        return max(0.0, 1.0 - epoch / length) ** self.power


def two_stage_poly_lr(optimizer: Optimizer, first_stage: int, total: int, power: float = 0.9) -> LambdaLR:
    """``LambdaLR`` with :class:`TwoStagePoly`, for ``configs/paper_brats2018.json``'s ``lr_scheduler``."""
    return LambdaLR(optimizer, TwoStagePoly(first_stage, total, power))
