"""The learning-rate schedule: PaddleClas's ``Cosine`` with ``warmup_epoch``, stepped every iteration.

As upstream: a linear warm-up over ``warmup_epochs`` epochs, then a cosine decay to 0 over the rest;
when the warm-up is as long as the run or longer, it is cut to the run and there is no decay (the
learning rate climbs for the whole run). One deliberate difference: upstream's warm-up starts at
learning rate 0, so its first update does nothing (with one step per epoch, a whole epoch). Here
step ``i`` of a warm-up of ``W`` steps runs at ``lr * (i + 1) / W`` (upstream: ``lr * i / W``): the
same ramp one step earlier, never 0, and the cosine that follows never reaches 0 on a step either.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SchedulePlan:
    """What the schedule does, in words the run's log can print."""

    warmup_epochs: int  # in effect (cut to the run's length)
    warmup_steps: int
    decay_steps: int  # cosine steps after the warm-up (0: no decay)

    def describe(self, asked: int) -> str:
        if self.warmup_steps == 0:
            return "no warm-up, cosine decay"
        if asked >= self.warmup_epochs and self.decay_steps == 0:
            return (f"warm-up over the whole run ({self.warmup_epochs} epochs, {self.warmup_steps} steps; "
                    f"Train.warmup_steps is {asked}), no decay")
        return f"warm-up {self.warmup_epochs} epochs ({self.warmup_steps} steps), then cosine decay"


def plan_schedule(epochs: int, warmup_epochs: int, steps: int) -> SchedulePlan:
    warm = min(warmup_epochs, epochs)
    return SchedulePlan(warm, warm * steps, (epochs - warm) * steps)


def build_schedule(lr: float, plan: SchedulePlan) -> Any:
    """A paddle LR scheduler for ``plan`` (its state goes into the checkpoint's ``.pdopt``)."""
    import paddle

    W = plan.warmup_steps
    if plan.decay_steps > 0:
        # T_max one longer than the decay: the handover step runs at lr, the last step above 0
        after: Any = paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=plan.decay_steps + 1, eta_min=0.0)
    else:  # the warm-up fills the run: the peak rate is held (one step at most)
        after = paddle.optimizer.lr.LambdaDecay(lr, lambda _: 1.0)
    if W <= 1:  # a one-step warm-up is the peak rate at once
        return after
    # LinearWarmup gives start + (end - start) * i / (W - 1) = lr * (i + 1) / W for i < W - 1, then
    # hands over to ``after`` at step W - 1, which runs at lr (the ramp's last value)
    return paddle.optimizer.lr.LinearWarmup(after, warmup_steps=W - 1, start_lr=lr / W, end_lr=lr)
