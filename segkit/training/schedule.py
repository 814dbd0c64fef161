"""The learning rate of a run as a function of the optimizer's step, for both training loops.

    cosine    warmup (linear from 0, --warmup-epochs) then cosine decay to 1% of --lr at the last step
    poly      (1 - step / total) ^ 0.9 down to 0 (DeepLab's "poly")
    constant  --lr throughout

`total` is epochs x steps per epoch. The schedule depends on the step alone, so a run resumed from a
checkpoint (whose optimizer holds its step count) continues with exactly the learning rates it would
have had. A run extended with `--resume --epochs N` gets the schedule of an N-epoch run from its next
step on: the rate the longer plan has at that step, decaying to the end of the new total.
"""

from __future__ import annotations

import keras


def learning_rate(config, steps_per_epoch: int):
    """A float (constant) or a keras LearningRateSchedule of the optimizer's step."""
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(config.lr, max(1, total), end_learning_rate=0.0, power=0.9)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.lr, max(1, total - warmup), alpha=0.01,
        warmup_target=config.lr if warmup else None, warmup_steps=warmup)


def rate_at(schedule, step: int) -> float:
    """The learning rate `schedule` (a float or a schedule) gives at optimizer step `step`."""
    return float(schedule(step) if callable(schedule) else schedule)


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)
