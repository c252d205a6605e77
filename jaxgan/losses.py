"""GAN losses as pure functions of discriminator logits, selected by name.

D outputs raw logits l; D(x) = sigmoid(l). The log-probability forms use the
stable identities log D = -softplus(-l) and log(1 - D) = -softplus(l).

| name            | D loss                                      | G loss                  |
|-----------------|---------------------------------------------|-------------------------|
| non_saturating  | -mean log D(x) - mean log(1 - D(G(z)))      | -mean log D(G(z))       |
| minimax         | same as non_saturating                      | mean log(1 - D(G(z)))   |
| hinge           | mean relu(1 - l_real) + mean relu(1 + l_fake)| -mean l_fake           |
| wasserstein     | mean l_fake - mean l_real                   | -mean l_fake            |
| least_squares   | 0.5 mean (l_real - 1)^2 + 0.5 mean l_fake^2 | 0.5 mean (l_fake - 1)^2 |

`least_squares` is LSGAN with targets a=0, b=c=1 on the raw D output.

One-sided label smoothing (Salimans et al. 2016), `label_smoothing=eps`: D's
target for real samples becomes 1 - eps, fake targets stay 0. For
non_saturating/minimax the real term is -mean[(1-eps) log D(x) + eps log(1-D(x))];
for least_squares it is 0.5 mean (l_real - (1-eps))^2. Hinge and Wasserstein
losses have no targets, so smoothing them is an error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("non_saturating", "minimax", "hinge", "wasserstein", "least_squares")
SMOOTHABLE = ("non_saturating", "minimax", "least_squares")


def check_loss(name: str) -> str:
  """Returns `name` if it is a known loss, else raises a ValueError listing the valid ones."""
  if name not in LOSSES:
    raise ValueError(f"unknown GAN loss {name!r}; valid losses: {', '.join(LOSSES)}")
  return name


def _mean(x):
  return jnp.mean(x.astype(jnp.float32))


def check_label_smoothing(name: str, label_smoothing: float) -> float:
  """Returns `label_smoothing` if it is valid for the loss `name`, else raises a ValueError."""
  check_loss(name)
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
  if label_smoothing and name not in SMOOTHABLE:
    raise ValueError(f"label_smoothing has no meaning for the {name} loss (it has no real-sample "
                     f"target); use one of {', '.join(SMOOTHABLE)} or label_smoothing=0")
  return float(label_smoothing)


def discriminator_loss(name: str, real_logits: jax.Array, fake_logits: jax.Array,
                       label_smoothing: float = 0.0) -> jax.Array:
  """The discriminator's loss (a scalar to minimise) for the loss called `name`;
  `label_smoothing` = eps makes the real target 1 - eps (one-sided)."""
  eps = check_label_smoothing(name, label_smoothing)
  if name in ("non_saturating", "minimax"):
    real = jax.nn.softplus(-real_logits)
    if eps:
      real = (1.0 - eps) * real + eps * jax.nn.softplus(real_logits)
    return _mean(real) + _mean(jax.nn.softplus(fake_logits))
  if name == "hinge":
    return _mean(jax.nn.relu(1.0 - real_logits)) + _mean(jax.nn.relu(1.0 + fake_logits))
  if name == "wasserstein":
    return _mean(fake_logits) - _mean(real_logits)
  return 0.5 * _mean(jnp.square(real_logits - (1.0 - eps))) + 0.5 * _mean(jnp.square(fake_logits))


def generator_loss(name: str, fake_logits: jax.Array) -> jax.Array:
  """The generator's loss (a scalar to minimise) for the loss called `name`."""
  check_loss(name)
  if name == "non_saturating":
    return _mean(jax.nn.softplus(-fake_logits))
  if name == "minimax":
    return -_mean(jax.nn.softplus(fake_logits))
  if name in ("hinge", "wasserstein"):
    return -_mean(fake_logits)
  return 0.5 * _mean(jnp.square(fake_logits - 1.0))
