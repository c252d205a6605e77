"""Regularizers, DiffAugment, PacGAN packing, weight clipping and the EMA start, each checked
against what it must compute, and composed in train_step (also under pmap)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgan
from jaxgan import augment, regularizers
from jaxgan.errors import ConfigError
from jaxgan.train import pack_samples

from helpers import assert_two_devices_match, sgd_state, tiny_dcgan_state
from test_train import assert_trees_close, images


def test_penalties_of_known_discriminators():
  w = jnp.array([3.0, 4.0])  # ||w|| = 5
  linear = lambda x: x @ w  # noqa: E731 - grad_x D = w everywhere
  real, fake = jnp.ones((6, 2)), -jnp.ones((6, 2))
  assert regularizers.gradient_penalty(linear, real, fake, jax.random.key(0)) == pytest.approx(16.0)
  assert regularizers.r1_penalty(linear, real) == pytest.approx(25.0)
  square = lambda x: jnp.sum(x ** 2, axis=1)  # noqa: E731 - grad = 2x
  x = jnp.arange(8.0).reshape(4, 2)
  assert regularizers.r1_penalty(square, x) == pytest.approx(float(jnp.mean(jnp.sum(4 * x ** 2, 1))))
  clipped = regularizers.clip_weights({"a": jnp.array([-1.0, 0.005, 2.0])}, 0.01)
  np.testing.assert_allclose(clipped["a"], [-0.01, 0.005, 0.01])


def test_pack_joins_consecutive_samples_along_the_last_axis():
  x = jnp.arange(12.0).reshape(6, 2)
  np.testing.assert_array_equal(pack_samples(x, 3), [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
  img = jnp.arange(4 * 2 * 2 * 3.0).reshape(4, 2, 2, 3)
  packed = pack_samples(img, 2)
  assert packed.shape == (2, 2, 2, 6)
  np.testing.assert_array_equal(packed[1, :, :, 3:], img[3])


def test_diff_augment_transforms():
  x = jax.random.uniform(jax.random.key(0), (8, 16, 16, 3), minval=-1, maxval=1)
  key = jax.random.key(1)
  # translation: every output is the input shifted by some (dy, dx), |d| <= 2, zeros coming in
  shifted = augment.diff_augment(x, key, "translation")
  for img, out in zip(np.asarray(x), np.asarray(shifted)):
    matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(np.asarray(augment._shift(img[None], jnp.array([dy]),
                                                          jnp.array([dx])))[0], out)]
    assert matches
  # cutout: a zeroed square of at most 8x8, the rest untouched
  cut = np.asarray(augment.diff_augment(x, key, "cutout"))
  zeroed = (cut == 0).all(axis=-1)
  assert 0 < zeroed.sum(axis=(1, 2)).min() and zeroed.sum(axis=(1, 2)).max() <= 64
  np.testing.assert_array_equal(cut[~zeroed], np.asarray(x)[~zeroed])
  # color: per-image affine changes, differentiable; same key, same result
  grads = jax.grad(lambda v: jnp.sum(augment.diff_augment(v, key, "color,translation,cutout")))(x)
  assert np.isfinite(np.asarray(grads)).all() and np.abs(np.asarray(grads)).sum() > 0
  np.testing.assert_array_equal(augment.diff_augment(x, key, "color"),
                                augment.diff_augment(x, key, "color"))
  with pytest.raises(ValueError, match="unknown DiffAugment transform.*'flip'"):
    augment.parse_policy("color,flip")


def test_diff_augment_draws_do_not_depend_on_the_device_split():
  x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3))
  key = jax.random.key(3)
  whole = augment.diff_augment(x, key, "color,translation,cutout")
  split = jax.vmap(lambda part: augment.diff_augment(part, key, "color,translation,cutout",
                                                     axis_name="d"), axis_name="d")(
      x.reshape(4, 2, 8, 8, 3))
  np.testing.assert_allclose(split.reshape(whole.shape), whole, rtol=1e-6, atol=1e-6)


def test_lazy_r1_applies_only_on_its_steps():
  x = images(0, n=8)
  plain = sgd_state()
  lazy = sgd_state(r1_gamma=10.0, r1_interval=2)
  step = jax.jit(jaxgan.train_step)
  _, m_plain = step(plain.replace(step=jnp.int32(1)), {"image": x}, jax.random.key(0))
  _, m_off = step(lazy.replace(step=jnp.int32(1)), {"image": x}, jax.random.key(0))
  _, m_on = step(lazy.replace(step=jnp.int32(2)), {"image": x}, jax.random.key(0))
  _, m_plain2 = step(plain.replace(step=jnp.int32(2)), {"image": x}, jax.random.key(0))
  assert float(m_off["d_loss"]) == pytest.approx(float(m_plain["d_loss"]), rel=1e-6)
  assert float(m_on["d_loss"]) > float(m_plain2["d_loss"]) + 1e-3


def test_options_compose_in_the_step():
  state = tiny_dcgan_state(loss="wasserstein", gp_weight=10.0, augment="color,translation,cutout",
                           pack=2, ema_decay=0.9, ema_start=2)
  assert state.d_params["Conv_0"]["kernel"].shape[2] == 6  # D's first conv sees 2 x 3 channels
  step = jax.jit(jaxgan.train_step)
  x = images(0, n=8)
  s1, m = step(state, {"image": x}, jax.random.key(0))
  assert all(np.isfinite(float(v)) for v in m.values())
  assert_trees_close(s1.g_ema_params, s1.g_params, rtol=0, atol=0)  # before ema_start: a copy
  s2, _ = step(s1, {"image": x}, jax.random.key(0))
  s3, _ = step(s2, {"image": x}, jax.random.key(0))  # step 2 >= ema_start: averaging
  expected = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, s2.g_ema_params, s3.g_params)
  assert_trees_close(s3.g_ema_params, expected, rtol=1e-6, atol=1e-7)
  clipped = tiny_dcgan_state(loss="wasserstein", weight_clip=0.01)
  c1, _ = step(clipped, {"image": x}, jax.random.key(0))
  assert max(float(jnp.abs(p).max()) for p in jax.tree.leaves(c1.d_params)) <= 0.01
  with pytest.raises(ValueError, match="not divisible by pack=2"):
    step(state, {"image": x[:3]}, jax.random.key(0))
  with pytest.raises(ValueError, match="DiffAugment needs image data"):
    jaxgan.create_state(jax.random.key(0), generator=jaxgan.models.MLPGenerator(),
                        discriminator=jaxgan.models.MLPDiscriminator(),
                        g_optimizer=optax.sgd(0.1), d_optimizer=optax.sgd(0.1), latent_dim=2,
                        data_shape=(2,), augment="color")


def test_pmap_equals_one_device_with_gp_augment_pack_and_ema():
  state = sgd_state(gp_weight=1.0, augment="translation,cutout", pack=2, ema_decay=0.5)
  assert state.g_ema_batch_stats is not None  # the EMA's BatchNorm statistics sync too
  x, rng = images(2, n=8), jax.random.key(9)
  single, m_single = jax.jit(jaxgan.train_step)(state, {"image": x}, rng)
  assert_two_devices_match(state, {"image": x}, rng, single, m_single, rtol=1e-5, atol=1e-6)


def _mlp_pack_state(batch_norm, **kwargs):
  return jaxgan.create_state(
      jax.random.key(3), generator=jaxgan.models.MLPGenerator(data_shape=(2,), hidden_dims=(8,),
                                                              batch_norm=batch_norm),
      discriminator=jaxgan.models.MLPDiscriminator(hidden_dims=(8,)),
      g_optimizer=optax.sgd(0.05, momentum=0.9), d_optimizer=optax.sgd(0.05, momentum=0.9),
      latent_dim=2, data_shape=(2,), pack=2, **kwargs)


def test_generator_per_slot_runs_g_once_per_pack_slot():
  x, rng = jax.random.normal(jax.random.key(1), (8, 2)), jax.random.key(4)
  step = jax.jit(jaxgan.train_step)
  # Without BatchNorm, G's rows do not interact: per slot or at once, the same step
  # (so each slot's samples come back to their rows, and the packs are the same packs).
  joint, m_joint = step(_mlp_pack_state(False), {"image": x}, rng)
  slots, m_slots = step(_mlp_pack_state(False, generator_per_slot=True), {"image": x}, rng)
  assert_trees_close(jax.tree.leaves(slots), jax.tree.leaves(joint), rtol=1e-6, atol=1e-7)
  assert_trees_close(m_slots, m_joint, rtol=1e-6, atol=1e-7)
  # With BatchNorm, each slot is normalised by its own statistics: G's running statistics
  # are those of slot 0 (rows 0, 2, ...) and then slot 1 (rows 1, 3, ...) of G's latents.
  state = _mlp_pack_state(True, generator_per_slot=True)
  new, metrics = step(state, {"image": x}, rng)
  z = jaxgan.train.latents_for(state, jax.random.split(jax.random.fold_in(rng, 0))[1], 8)
  stats = state.g_batch_stats
  for j in range(2):
    _, new_vars = state.generator.apply({"params": state.g_params, "batch_stats": stats},
                                        z[j::2], train=True, mutable=["batch_stats"])
    stats = new_vars["batch_stats"]
  assert_trees_close(new.g_batch_stats, stats, rtol=1e-5, atol=1e-6)
  at_once, m_at_once = step(_mlp_pack_state(True), {"image": x}, rng)
  assert abs(float(metrics["d_loss"]) - float(m_at_once["d_loss"])) > 1e-4
  # Under pmap (2 devices, 4 rows each) each device's slots are its part of the global slots.
  assert_two_devices_match(state, {"image": x}, rng, new, metrics, rtol=1e-5, atol=1e-6)


def test_spectral_norm_discriminator_divides_by_the_largest_singular_value():
  d = jaxgan.models.DCGANDiscriminator(image_size=16, ndf=4, spectral_norm=True)
  x = images(0, n=4)
  variables = d.init(jax.random.key(0), x)
  assert "BatchNorm_0" not in variables["params"]  # SN-DCGAN: no BatchNorm
  stats = variables["batch_stats"]
  power_step = jax.jit(lambda stats: d.apply({**variables, "batch_stats": stats}, x, train=True,
                                             mutable=["batch_stats"])[1]["batch_stats"])
  for _ in range(300):  # the power iteration runs once per training pass
    stats = power_step(stats)
  for i in range(3):
    kernel = np.asarray(variables["params"][f"Conv_{i}"]["kernel"])
    sigma = float(stats[f"SpectralNorm_{i}"][f"Conv_{i}/kernel/sigma"])
    largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    assert sigma == pytest.approx(largest, rel=1e-3)
  # In the step: D's update advances the power iteration; inference leaves it alone.
  state = jaxgan.create_state(
      jax.random.key(0), generator=jaxgan.models.DCGANGenerator(image_size=16, ngf=4),
      discriminator=d, g_optimizer=optax.adam(1e-3), d_optimizer=optax.adam(1e-3),
      latent_dim=8, data_shape=(16, 16, 3), loss="hinge")
  new_state, metrics = jax.jit(jaxgan.train_step)(state, {"image": x}, jax.random.key(1))
  assert np.isfinite(float(metrics["d_loss"]))
  before = state.d_batch_stats["SpectralNorm_1"]["Conv_1/kernel/u"]
  after = new_state.d_batch_stats["SpectralNorm_1"]["Conv_1/kernel/u"]
  assert not np.allclose(before, after)


def test_ttur_rates_and_the_sn_resnet_model_from_the_config():
  from experiments.configs import celeba
  from jaxgan import trainer

  config = celeba.get_config("smoke")
  config.model.name = "sn_resnet"
  config.optimizer.g_lr, config.optimizer.d_lr = 1e-4, 4e-4  # TTUR (Heusel et al. 2017)
  trainer.validate_config(config)
  state = trainer.create_state_from_config(config, jax.random.key(0))
  assert isinstance(state.generator, jaxgan.models.SNResNetGenerator)
  assert isinstance(state.discriminator, jaxgan.models.SNResNetDiscriminator)
  new, metrics = jax.jit(jaxgan.train_step)(state, {"image": images(0, n=16, size=32)},
                                            jax.random.key(1))
  assert np.isfinite(float(metrics["d_loss"]))
  # Adam's first update moves every parameter with a clear gradient by ~lr: each network's own.
  for old, cur, lr in ((state.g_params, new.g_params, 1e-4), (state.d_params, new.d_params, 4e-4)):
    moved = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel()
                            for a, b in zip(jax.tree.leaves(cur), jax.tree.leaves(old))])
    assert moved.max() == pytest.approx(lr, rel=0.05)
  config.model.image_size = 128
  with pytest.raises(ConfigError, match="sn_resnet is defined for 32 and 64 pixels"):
    trainer.validate_config(config)
