"""Discriminator regularizers, as pure functions that `train_step` adds to D's loss.

`d_fn(x)` is the discriminator as a function of its input alone (parameters
closed over), so each penalty is differentiable with respect to D's parameters.

- `gradient_penalty`: WGAN-GP (Gulrajani et al. 2017), E[(||grad_x D(x_hat)|| - 1)^2]
  at random interpolates x_hat of real and fake samples.
- `r1_penalty`: R1 (Mescheder et al. 2018), E[||grad_x D(x_real)||^2]; the caller
  weighs it by gamma / 2 (and by the interval, when applied lazily).
- `clip_weights`: the original WGAN's weight clipping to [-c, c].
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxgan import rng


def _input_gradients(d_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """d D(x_i) / d x_i for every sample, flattened: [B, prod(sample shape)]."""
  grads = jax.grad(lambda v: jnp.sum(d_fn(v)))(x)
  return grads.reshape(grads.shape[0], -1)


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     key: jax.Array, axis_name: str | None = None) -> jax.Array:
  """WGAN-GP: mean over samples of (||grad D(eps real + (1 - eps) fake)|| - 1)^2,
  eps ~ U(0, 1) per sample (drawn for the global batch under `axis_name`)."""
  eps = rng.draw(lambda k, n: jax.random.uniform(k, (n,) + (1,) * (real.ndim - 1), real.dtype),
                 key, real.shape[0], axis_name)
  x_hat = eps * real + (1.0 - eps) * fake
  norms = jnp.sqrt(jnp.sum(jnp.square(_input_gradients(d_fn, x_hat)), axis=1) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """R1: mean over real samples of ||grad D(x)||^2 (weigh by gamma / 2)."""
  return jnp.mean(jnp.sum(jnp.square(_input_gradients(d_fn, real)), axis=1))


def clip_weights(params, clip: float):
  """Every parameter clipped to [-clip, clip] (WGAN's Lipschitz constraint)."""
  return jax.tree.map(lambda p: jnp.clip(p, -clip, clip), params)
