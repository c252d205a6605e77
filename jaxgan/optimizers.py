"""Adam for G and D with an optional learning-rate decay over the run.

A decay counts optimizer updates: G is updated once per training step and D
`n_critic` times, so each decays over its own number of updates and both reach
0 at `num_steps`. The schedule's position is the optimizer state's update count,
which checkpoints carry, so a resumed run goes on along the same curve.
"""

from __future__ import annotations

import optax

from jaxgan.errors import ConfigError

LR_SCHEDULES = ("constant", "linear", "cosine")
DEFAULT_SCHEDULE = "constant"  # also what a saved config without a schedule key ran with


def decays(schedule: str) -> bool:
  """Whether the rate follows a curve over `num_steps`; a resumed run must then keep
  `num_steps`, or the curve (and so the training) would change mid-run."""
  return schedule != DEFAULT_SCHEDULE


def learning_rate(peak: float, schedule: str, num_updates: int) -> optax.ScalarOrSchedule:
  """`peak` throughout ("constant"), or decayed from `peak` to 0 over `num_updates`
  updates along a line ("linear") or a half cosine ("cosine")."""
  if not decays(schedule):
    return peak
  if schedule == "linear":
    return optax.linear_schedule(peak, 0.0, num_updates)
  if schedule == "cosine":
    return optax.cosine_decay_schedule(peak, num_updates)
  raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of "
                   f"{', '.join(LR_SCHEDULES)}")


def check_schedule(config, key: str = "lr_schedule") -> str:
  """`config`'s schedule (default "constant"), or a one-line ConfigError naming `key` if unknown."""
  schedule = config.get(key.split(".")[-1], DEFAULT_SCHEDULE)
  if schedule not in LR_SCHEDULES:
    raise ConfigError(f"config.{key}={schedule!r} is unknown; choose one of "
                      f"{', '.join(LR_SCHEDULES)}")
  return schedule


def adam_pair(g_lr: float, d_lr: float, b1: float, b2: float, *, schedule: str = DEFAULT_SCHEDULE,
              num_steps: int = 0, n_critic: int = 1
              ) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """(G's, D's) Adam: peak rates `g_lr`, `d_lr` (TTUR when they differ), decayed over
  `num_steps` training steps unless `schedule` is "constant"."""
  if decays(schedule) and num_steps < 1:
    raise ValueError(f"schedule {schedule!r} decays over the run: give num_steps >= 1")
  return (optax.adam(learning_rate(g_lr, schedule, num_steps), b1=b1, b2=b2),
          optax.adam(learning_rate(d_lr, schedule, num_steps * n_critic), b1=b1, b2=b2))
