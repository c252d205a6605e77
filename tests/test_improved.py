"""The training strategies of "Improved Techniques for Training GANs" (Salimans et al. 2016):
one-sided label smoothing, feature matching, minibatch discrimination (and ProGAN's minibatch
stddev), historical averaging - formulas against hand computation, and the step's global view."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgan
from jaxgan import models
from jaxgan.checkpointing import Checkpointer
from jaxgan.models.minibatch import MinibatchDiscrimination, MinibatchStdDev
from jaxgan.train import historical_penalty

from helpers import assert_two_devices_match
from test_train import assert_trees_close, images


def test_minibatch_discrimination_formula():
  f = jnp.array([[0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
  layer = MinibatchDiscrimination(num_kernels=2, kernel_dim=2)
  t = jnp.array([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 1.0]])  # kernel 0: f; kernel 1: (2 f0, f1)
  o = layer.apply({"params": {"T": t}}, f)
  m = np.stack([np.asarray(f), np.asarray(f) * [2.0, 1.0]], axis=1)  # [B, K, C]
  expected = [[sum(np.exp(-np.abs(m[i, k] - m[j, k]).sum()) for j in range(3) if j != i)
               for k in range(2)] for i in range(3)]
  np.testing.assert_allclose(o, expected, rtol=1e-5, atol=1e-6)  # float32 sum minus exp(0)
  # With axis_name every sample is compared with the whole (global) batch.
  x = jax.random.normal(jax.random.key(0), (8, 6))
  params = MinibatchDiscrimination().init(jax.random.key(1), x)
  whole = MinibatchDiscrimination().apply(params, x)
  split = jax.vmap(lambda part: MinibatchDiscrimination(axis_name="d").apply(params, part),
                   axis_name="d")(x.reshape(4, 2, 6))
  np.testing.assert_allclose(split.reshape(whole.shape), whole, rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_formula():
  x = jnp.array([[1.0, 2.0], [3.0, 6.0], [0.0, 0.0], [0.0, 4.0]])
  out = MinibatchStdDev(group_size=2).apply({}, x)
  # group 1: stds (1, 2) -> 1.5; group 2: stds (0, 2) -> 1.0 (plus the 1e-8 inside the sqrt)
  np.testing.assert_allclose(out[:, 2], [1.5, 1.5, 1.0, 1.0], atol=1e-4)
  np.testing.assert_array_equal(out[:, :2], x)
  img = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
  assert MinibatchStdDev().apply({}, img).shape == (8, 4, 4, 4)
  with pytest.raises(ValueError, match="divisible by its group size 4, got 6 rows"):
    MinibatchStdDev().apply({}, img[:6])


def _mlp_state(**kwargs):
  return jaxgan.create_state(
      jax.random.key(0),
      generator=models.MLPGenerator(data_shape=(2,), hidden_dims=(16, 16), batch_norm=True),
      discriminator=models.MLPDiscriminator(hidden_dims=(16, 16), minibatch=kwargs.pop(
          "minibatch", "none")),
      g_optimizer=kwargs.pop("g_optimizer", optax.sgd(0.05, momentum=0.9)),
      d_optimizer=kwargs.pop("d_optimizer", optax.sgd(0.05, momentum=0.9)),
      latent_dim=2, data_shape=(2,), **kwargs)


def test_feature_matching_loss_is_the_squared_distance_of_mean_features():
  state = _mlp_state(generator_objective="feature_matching", d_optimizer=optax.sgd(0.0))
  x = jax.random.normal(jax.random.key(5), (8, 2))
  rng = jax.random.key(3)
  new, metrics = jax.jit(jaxgan.train_step)(state, {"image": x}, rng)
  # Recompute with the step's noise: key = fold_in(rng, step), then (d_key, g_key) = split.
  _, g_key = jax.random.split(jax.random.fold_in(rng, 0))
  z = jaxgan.latents(g_key, 8, 2)
  fake = state.generator.apply({"params": state.g_params, "batch_stats": state.g_batch_stats}, z,
                               train=True, mutable=["batch_stats"])[0]

  def features(v):
    _, out = state.discriminator.apply({"params": new.d_params}, v, mutable=["intermediates"])
    return out["intermediates"]["features"][0]

  expected = jnp.sum(jnp.square(features(x).mean(0) - features(fake).mean(0)))
  np.testing.assert_allclose(metrics["g_loss"], expected, rtol=1e-5)
  assert not np.allclose(new.g_params["Dense_0"]["kernel"], state.g_params["Dense_0"]["kernel"])
  with pytest.raises(ValueError, match="unknown generator_objective 'moments'"):
    _mlp_state(generator_objective="moments")


def test_historical_averaging_keeps_the_mean_of_past_parameters():
  state = _mlp_state(g_historical_weight=0.5, d_historical_weight=0.5)
  params_g, params_d = [state.g_params], [state.d_params]
  step = jax.jit(jaxgan.train_step)
  x = jax.random.normal(jax.random.key(5), (8, 2))
  s = state
  for _ in range(3):
    s, m = step(s, {"image": x}, jax.random.key(1))
    params_g.append(s.g_params)
    params_d.append(s.d_params)
  mean = lambda trees: jax.tree.map(lambda *a: sum(a) / len(a), *trees)  # noqa: E731
  assert_trees_close(s.g_historical_params, mean(params_g), rtol=1e-5, atol=1e-6)
  assert_trees_close(s.d_historical_params, mean(params_d), rtol=1e-5, atol=1e-6)
  a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
  b = {"w": jnp.array([0.0, 4.0]), "b": jnp.array(1.0)}
  assert float(historical_penalty(a, b)) == pytest.approx(1 + 4 + 4)
  assert _mlp_state().g_historical_params is None  # off: nothing in the state


def test_all_strategies_compose_under_pmap_like_one_device_and_checkpoint(tmp_path):
  state = _mlp_state(minibatch="discrimination", generator_objective="feature_matching",
                     label_smoothing=0.1, g_historical_weight=0.1, d_historical_weight=0.1)
  x, rng = jax.random.normal(jax.random.key(2), (8, 2)), jax.random.key(9)
  single, m_single = jax.jit(jaxgan.train_step)(state, {"image": x}, rng)
  assert all(np.isfinite(float(v)) for v in m_single.values())
  assert_two_devices_match(state, {"image": x}, rng, single, m_single, rtol=1e-4, atol=1e-6)
  # the running means are part of the checkpoint, so resuming stays exact
  checkpointer = Checkpointer(tmp_path / "ckpt", asynchronous=False)
  checkpointer.save(1, single, {})
  restored, _ = checkpointer.restore(state)
  checkpointer.close()
  assert_trees_close(restored.d_historical_params, single.d_historical_params, rtol=0, atol=0)
  with pytest.raises(ValueError, match="label_smoothing has no meaning for the hinge loss"):
    _mlp_state(loss="hinge", label_smoothing=0.1)


@pytest.mark.parametrize("minibatch", ["stddev", "discrimination"])
def test_dcgan_minibatch_options_with_feature_matching_train_finitely(minibatch):
  state = jaxgan.create_state(
      jax.random.key(0), generator=models.DCGANGenerator(image_size=16, ngf=8),
      discriminator=models.DCGANDiscriminator(image_size=16, ndf=8, minibatch=minibatch),
      g_optimizer=optax.adam(2e-4, b1=0.5), d_optimizer=optax.adam(2e-4, b1=0.5), latent_dim=16,
      data_shape=(16, 16, 3), generator_objective="feature_matching", label_smoothing=0.1)
  new, metrics = jax.jit(jaxgan.train_step)(state, {"image": images(0, n=8)}, jax.random.key(1))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["g_loss"]) > 0
