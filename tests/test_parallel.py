"""Data-parallel steps over 8 simulated CPU devices equal the single-device step."""

import jax
import numpy as np
import optax
import pytest

import jaxgan
from conftest import tiny_dcgan_state


def sgd_state(**kwargs):
  # SGD with momentum: a real optimizer state, without Adam's sign-like first updates that turn
  # float reduction-order noise on near-zero gradients into lr-sized differences.
  return tiny_dcgan_state(g_optimizer=optax.sgd(0.05, momentum=0.9),
                          d_optimizer=optax.sgd(0.05, momentum=0.9), **kwargs)


def batches(n, rows=16, size=16):
  return [np.asarray(jax.random.uniform(jax.random.key(100 + i), (rows, size, size, 3),
                                        minval=-1, maxval=1)) for i in range(n)]


def run(step, state, xs, rng):
  state = jax.tree.map(jax.numpy.copy, state)  # the steps donate (consume) their input state
  history = []
  for x in xs:
    state, metrics = step(state, {"image": x}, rng)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def assert_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_critic", [1, 2])
def test_jit_and_pmap_on_8_devices_equal_one_device(n_critic):
  assert jax.device_count() == 8
  state = sgd_state(n_critic=n_critic, ema_decay=0.5)
  xs, rng = batches(3), jax.random.key(7)
  single = jax.jit(jaxgan.train_step)
  reference = run(single, state, xs, rng)
  for kind in ("jit", "pmap"):
    step = jaxgan.parallel.data_parallel_step(kind)
    assert step.num_devices == 8
    new, history = run(step, state, xs, rng)
    assert_close(new, reference[0])  # params, BatchNorm stats, optimizer states, EMA, step
    assert_close(history, reference[1])  # metrics of every step
    assert int(new.step) == 3


def test_state_stays_an_ordinary_replicated_gan_state_and_is_donated():
  state = sgd_state()
  step = jaxgan.parallel.data_parallel_step("pmap")
  new, _ = step(state, {"image": batches(1)[0]}, jax.random.key(0))
  assert isinstance(new, jaxgan.GANState)
  assert new.step.sharding.is_fully_replicated and len(new.step.sharding.device_set) == 8
  again, _ = jaxgan.parallel.data_parallel_step("jit")(new, {"image": batches(1)[0]},
                                                       jax.random.key(0))
  assert new.step.is_deleted()  # donated
  assert int(again.step) == 2
  # A replicated state feeds the ordinary single-device functions too.
  assert jaxgan.sample(again, jax.random.key(1), 3).shape == (3, 16, 16, 3)


@pytest.mark.parametrize("kind", ["jit", "pmap"])
def test_batch_not_divisible_by_devices_is_a_clear_error(kind):
  step = jaxgan.parallel.data_parallel_step(kind)
  with pytest.raises(ValueError, match="global batch of 12 is not divisible by the 8 devices"):
    step(sgd_state(), {"image": batches(1, rows=12)[0]}, jax.random.key(0))
  with pytest.raises(ValueError, match="n_critic=2; use a multiple of 16"):
    step(sgd_state(n_critic=2), {"image": batches(1, rows=8)[0]}, jax.random.key(0))
  with pytest.raises(ValueError, match="unknown data-parallel kind"):
    jaxgan.parallel.data_parallel_step("ddp")
