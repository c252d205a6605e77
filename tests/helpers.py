"""Small states and batches shared by tests and the multi-process worker (sets no XLA flags)."""

import os

import jax
import numpy as np
import optax

import jaxgan


def tiny_dcgan_state(seed=0, *, image_size=16, channels=3, loss="non_saturating", **kwargs):
  """A DCGAN small enough to compile in seconds."""
  return jaxgan.create_state(
      jax.random.key(seed),
      generator=jaxgan.models.DCGANGenerator(image_size=image_size, channels=channels, ngf=8),
      discriminator=jaxgan.models.DCGANDiscriminator(image_size=image_size, channels=channels,
                                                     ndf=8),
      g_optimizer=kwargs.pop("g_optimizer", optax.adam(2e-4, b1=0.5)),
      d_optimizer=kwargs.pop("d_optimizer", optax.adam(2e-4, b1=0.5)),
      latent_dim=kwargs.pop("latent_dim", 16), data_shape=(image_size, image_size, channels),
      loss=loss, **kwargs)


def sgd_state(**kwargs):
  """For equality tests: SGD with momentum has a real optimizer state, without Adam's first
  updates (~lr * sign(grad)) that turn float reduction-order noise on near-zero gradients into
  lr-sized differences."""
  return tiny_dcgan_state(g_optimizer=optax.sgd(0.05, momentum=0.9),
                          d_optimizer=optax.sgd(0.05, momentum=0.9), **kwargs)


def assert_two_devices_match(state, batch, rng, single, single_metrics, rtol, atol):
  """train_step under pmap on 2 devices, each with half of `batch`'s rows, gives on each
  device the single-device step's new state and metrics."""
  import functools
  step = jax.pmap(functools.partial(jaxgan.train_step, axis_name="batch"), axis_name="batch",
                  in_axes=(None, 0, None), devices=jax.devices()[:2])
  halves = jax.tree.map(lambda v: v.reshape(2, v.shape[0] // 2, *v.shape[1:]), batch)
  multi, multi_metrics = step(state, halves, rng)
  for i in range(2):
    for got, want in ((multi, single), (multi_metrics, single_metrics)):
      jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g[i]), np.asarray(w),
                                                           rtol=rtol, atol=atol), got, want)


def image_batches(n, rows=16, size=16):
  return [np.asarray(jax.random.uniform(jax.random.key(100 + i), (rows, size, size, 3),
                                        minval=-1, maxval=1)) for i in range(n)]


def run_steps(step, state, xs, rng, rows=None):
  """Runs `step` over the batches (optionally only `rows` of each); returns (state, metrics)."""
  state = jax.tree.map(jax.numpy.copy, state)  # the steps donate (consume) their input state
  history = []
  for x in xs:
    state, metrics = step(state, {"image": x if rows is None else x[rows]}, rng)
    history.append(metrics)
  return jax.tree.map(np.asarray, (state, history))


def assert_run_saved_before_the_key_resumes_only_as(tmp_path, config, key, old_value,
                                                    added_keys=None):
  """A toy (or, with its `added_keys`, Stacked MNIST) run saved before config `key` existed
  behaved as `old_value`: resuming it with the current (different) value is refused in one line
  naming the fix; with `old_value` it resumes."""
  import json

  import pytest

  from jaxgan import mixture_benchmark
  from jaxgan.checkpointing import ResumableRun
  from jaxgan.errors import ConfigError
  saved = json.loads(config.to_json_best_effort())
  del saved[key]
  assert config[key] != old_value
  added_keys = mixture_benchmark.ADDED_KEYS if added_keys is None else added_keys
  with ResumableRun(tmp_path, config, added_keys=added_keys) as run:
    with pytest.raises(ConfigError, match=f"config.{key}={old_value!r}, not {config[key]!r}; "
                                          "resume with"):
      run._check_config(saved)
    config[key] = old_value
    run.config = json.loads(config.to_json_best_effort())
    run._check_config(saved)


def xla_flags_with_devices(num_devices: int) -> str:
  """The test session's XLA_FLAGS (conftest's) with `num_devices` simulated CPU devices, for
  subprocesses that run as a process of a smaller host."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count=")]
  return " ".join(flags + [f"--xla_force_host_platform_device_count={num_devices}"])
