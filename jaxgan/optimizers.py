"""G's and D's optimizers (Adam, or RMSProp as the original WGAN used) with an optional
learning-rate decay over the run.

A decay counts optimizer updates: G is updated `g_steps` times per training step
(usually once) and D `n_critic` times, so each decays over its own number of
updates and both reach 0 at `num_steps`. The schedule's position is the optimizer
state's update count, which checkpoints carry, so a resumed run goes on along the
same curve.
"""

from __future__ import annotations

import optax

from jaxgan.errors import ConfigError

OPTIMIZERS = ("adam", "rmsprop")
DEFAULT_OPTIMIZER = "adam"  # also what a saved config without an optimizer key ran with
RMSPROP_DECAY = 0.99  # PyTorch's RMSprop `alpha`, which the WGAN paper's code ran with
LR_SCHEDULES = ("constant", "linear", "cosine")
DEFAULT_SCHEDULE = "constant"  # also what a saved config without a schedule key ran with


def decays(schedule: str) -> bool:
  """Whether the rate follows a curve over `num_steps`; a resumed run must then keep
  `num_steps`, or the curve (and so the training) would change mid-run."""
  return schedule != DEFAULT_SCHEDULE


def may_change_on_resume(config) -> tuple[str, ...]:
  """The config keys a benchmark run may change when it resumes: `num_steps`, to train a
  run further, unless the learning rate decays over `num_steps`."""
  return () if decays(check_schedule(config)) else ("num_steps",)


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


def check_optimizer(config, key: str = "optimizer") -> str:
  """`config`'s optimizer (default "adam"), or a one-line ConfigError naming `key` if it is
  unknown or the `rms_decay` beside it is outside [0, 1)."""
  name = config.get(key.split(".")[-1], DEFAULT_OPTIMIZER)
  if name not in OPTIMIZERS:
    raise ConfigError(f"config.{key}={name!r} is unknown; choose one of {', '.join(OPTIMIZERS)}")
  decay = config.get("rms_decay", RMSPROP_DECAY)
  if not 0 <= decay < 1:
    raise ConfigError(f"config.{key.rpartition('.')[0] + '.' if '.' in key else ''}rms_decay "
                      f"must be in [0, 1), got {decay}")
  return name


def optimizer(name: str, learning_rate: optax.ScalarOrSchedule, *, b1: float = 0.9,
              b2: float = 0.999, rms_decay: float = RMSPROP_DECAY) -> optax.GradientTransformation:
  """Adam(b1, b2), or RMSProp as PyTorch computes it (`torch.optim.RMSprop(lr, alpha=rms_decay)`:
  v = a v + (1 - a) g², step g / (√v + 1e-8), v starting at 0), the original WGAN's choice."""
  if name == "adam":
    return optax.adam(learning_rate, b1=b1, b2=b2)
  if name == "rmsprop":
    return optax.rmsprop(learning_rate, decay=rms_decay, eps=1e-8, eps_in_sqrt=False)
  raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def optimizer_pair(g_lr: float, d_lr: float, b1: float = 0.9, b2: float = 0.999, *,
                   name: str = DEFAULT_OPTIMIZER, rms_decay: float = RMSPROP_DECAY,
                   schedule: str = DEFAULT_SCHEDULE, num_steps: int = 0, n_critic: int = 1,
                   g_steps: int = 1
                   ) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """(G's, D's) optimizer `name`: peak rates `g_lr`, `d_lr` (TTUR when they differ),
  decayed over `num_steps` training steps unless `schedule` is "constant"."""
  if decays(schedule) and num_steps < 1:
    raise ValueError(f"schedule {schedule!r} decays over the run: give num_steps >= 1")
  hyper = {"b1": b1, "b2": b2, "rms_decay": rms_decay}
  return (optimizer(name, learning_rate(g_lr, schedule, num_steps * g_steps), **hyper),
          optimizer(name, learning_rate(d_lr, schedule, num_steps * n_critic), **hyper))
