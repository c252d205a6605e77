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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("non_saturating", "minimax", "hinge", "wasserstein", "least_squares")


def check_loss(name: str) -> str:
  """Returns `name` if it is a known loss, else raises a ValueError listing the valid ones."""
  if name not in LOSSES:
    raise ValueError(f"unknown GAN loss {name!r}; valid losses: {', '.join(LOSSES)}")
  return name


def _mean(x):
  return jnp.mean(x.astype(jnp.float32))


def discriminator_loss(name: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """The discriminator's loss (a scalar to minimise) for the loss called `name`."""
  check_loss(name)
  if name in ("non_saturating", "minimax"):
    return _mean(jax.nn.softplus(-real_logits)) + _mean(jax.nn.softplus(fake_logits))
  if name == "hinge":
    return _mean(jax.nn.relu(1.0 - real_logits)) + _mean(jax.nn.relu(1.0 + fake_logits))
  if name == "wasserstein":
    return _mean(fake_logits) - _mean(real_logits)
  return 0.5 * _mean(jnp.square(real_logits - 1.0)) + 0.5 * _mean(jnp.square(fake_logits))


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
