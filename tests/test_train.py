import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgan
from helpers import sgd_state, tiny_dcgan_state
from jaxgan import losses


def images(seed, n=8, size=16, channels=3):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, channels), minval=-1, maxval=1)


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                       rtol=rtol, atol=atol), a, b)


def assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def state_values(state):
  return jax.tree.map(np.asarray, state)


def reference_step(state, x, rng, uniform_z=False):
  """The DCGAN algorithm written out by hand for n_critic=1 and plain SGD(lr); z ~ N(0, I), or
  U(-1, 1) with `uniform_z`."""
  lr = 0.1
  g, d = state.generator, state.discriminator
  key = jax.random.fold_in(rng, state.step)
  d_key, g_key = jax.random.split(key)
  if uniform_z:
    noise = functools.partial(jax.random.uniform, minval=-1.0, maxval=1.0)
  else:
    noise = jax.random.normal
  z = noise(jax.random.fold_in(d_key, 0), (x.shape[0], state.latent_dim))
  fake, _ = g.apply({"params": state.g_params, "batch_stats": state.g_batch_stats}, z,
                    mutable=["batch_stats"])  # G's statistics from this pass are discarded

  def d_loss(p):
    r, v1 = d.apply({"params": p, "batch_stats": state.d_batch_stats}, x, mutable=["batch_stats"])
    f, v2 = d.apply({"params": p, "batch_stats": v1["batch_stats"]}, fake, mutable=["batch_stats"])
    return -jnp.mean(jax.nn.log_sigmoid(r)) - jnp.mean(jnp.log1p(-jax.nn.sigmoid(f))), v2

  (dl, dv), dg = jax.value_and_grad(d_loss, has_aux=True)(state.d_params)
  d_params = jax.tree.map(lambda p, g_: p - lr * g_, state.d_params, dg)
  z = noise(g_key, (x.shape[0], state.latent_dim))

  def g_loss(p):
    out, gv = g.apply({"params": p, "batch_stats": state.g_batch_stats}, z, mutable=["batch_stats"])
    f, _ = d.apply({"params": d_params, "batch_stats": dv["batch_stats"]}, out,
                   mutable=["batch_stats"])  # D's statistics from G's pass are discarded
    return -jnp.mean(jax.nn.log_sigmoid(f)), gv

  (gl, gv), gg = jax.value_and_grad(g_loss, has_aux=True)(state.g_params)
  g_params = jax.tree.map(lambda p, g_: p - lr * g_, state.g_params, gg)
  return (g_params, d_params, gv["batch_stats"], dv["batch_stats"]), (dl, gl)


@pytest.mark.parametrize("latent_distribution", ["normal", "uniform"])
def test_step_follows_the_algorithm(latent_distribution):
  state = tiny_dcgan_state(g_optimizer=optax.sgd(0.1), d_optimizer=optax.sgd(0.1),
                           latent_distribution=latent_distribution)
  x, rng = images(1), jax.random.key(3)
  new, metrics = jax.jit(jaxgan.train_step)(state, {"image": x}, rng)
  (g_params, d_params, g_stats, d_stats), (dl, gl) = jax.jit(
      functools.partial(reference_step, uniform_z=latent_distribution == "uniform"))(state, x, rng)
  assert_trees_close(new.g_params, g_params, rtol=1e-5, atol=1e-6)
  assert_trees_close(new.d_params, d_params, rtol=1e-5, atol=1e-6)
  assert_trees_close(new.g_batch_stats, g_stats, rtol=1e-5, atol=1e-6)
  assert_trees_close(new.d_batch_stats, d_stats, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["d_loss"], dl, rtol=1e-5)
  np.testing.assert_allclose(metrics["g_loss"], gl, rtol=1e-5)
  assert int(new.step) == 1
  assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm"}


def test_uniform_latents_fill_the_cube_and_every_sampler_draws_them():
  z = jaxgan.latents(jax.random.key(0), 20_000, 8, distribution="uniform")
  assert z.shape == (20_000, 8) and float(z.min()) >= -1.0 and float(z.max()) < 1.0
  np.testing.assert_allclose(np.var(np.asarray(z), axis=0), 1 / 3, rtol=0.05)  # U(-1, 1)
  state = tiny_dcgan_state(latent_distribution="uniform")
  key = jax.random.key(5)
  expected = jaxgan.generate(state, jaxgan.latents(key, 4, state.latent_dim,
                                                   distribution="uniform"))
  samples = jaxgan.sample(state, key, 4)
  np.testing.assert_allclose(samples, expected, rtol=1e-4, atol=1e-8)  # jit vs op by op
  from_normal = jaxgan.generate(state, jaxgan.latents(key, 4, state.latent_dim))
  assert np.abs(np.asarray(samples) - np.asarray(from_normal)).max() > 1e-4
  np.testing.assert_array_equal(jaxgan.latents_for(state, key, 4),
                                jaxgan.latents(key, 4, state.latent_dim, distribution="uniform"))
  with pytest.raises(ValueError, match="unknown latent_distribution 'gaussian'; choose one of "
                                       "normal, uniform"):
    jaxgan.latents(key, 4, 8, distribution="gaussian")
  with pytest.raises(ValueError, match="unknown latent_distribution 'gaussian'"):
    tiny_dcgan_state(latent_distribution="gaussian")


def test_step_is_deterministic_and_pure():
  state = tiny_dcgan_state()
  before = state_values(state)
  step = jax.jit(jaxgan.train_step)
  batch, rng = {"image": images(1)}, jax.random.key(5)
  a, ma = step(state, batch, rng)
  b, mb = step(state, batch, rng)
  assert_trees_equal(a, b)
  assert_trees_equal(ma, mb)
  assert_trees_equal(state, before)  # the input state is untouched
  c, _ = step(state, batch, jax.random.key(6))
  assert not np.array_equal(np.asarray(a.g_params["Project_0"]["kernel"]),
                            np.asarray(c.g_params["Project_0"]["kernel"]))


def test_runs_inside_scan_like_a_python_loop():
  state = sgd_state()
  xs = jnp.stack([images(i) for i in range(3)])
  rng = jax.random.key(0)

  @jax.jit
  def scanned(state):
    return jax.lax.scan(lambda s, x: jaxgan.train_step(s, {"image": x}, rng), state, xs)

  s_scan, m_scan = scanned(state)
  step = jax.jit(jaxgan.train_step, donate_argnums=0)
  s_loop = jax.tree.map(jnp.copy, state)
  for i in range(3):
    s_loop, m = step(s_loop, {"image": xs[i]}, rng)
  assert int(s_scan.step) == 3
  assert_trees_close(s_scan, s_loop, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m_scan["g_loss"][-1], m["g_loss"], rtol=1e-5)


def test_n_critic_updates_d_several_times_per_g_update():
  state = tiny_dcgan_state(n_critic=3, loss="wasserstein")
  new, metrics = jax.jit(jaxgan.train_step)(state, {"image": images(0, n=9)}, jax.random.key(0))
  assert int(new.d_opt_state[0].count) == 3
  assert int(new.g_opt_state[0].count) == 1
  assert all(np.isfinite(v) for v in metrics.values())
  with pytest.raises(ValueError, match="not divisible by n_critic=3"):
    jaxgan.train_step(state, {"image": images(0, n=8)}, jax.random.key(0))


def test_ema_of_generator_and_sample():
  state = tiny_dcgan_state(ema_decay=0.75)
  assert_trees_equal(state.g_ema_params, state.g_params)
  new, _ = jax.jit(jaxgan.train_step)(state, {"image": images(0)}, jax.random.key(0))
  expected = jax.tree.map(lambda e, p: 0.75 * e + 0.25 * p, state.g_ema_params, new.g_params)
  assert_trees_close(new.g_ema_params, expected)
  out = jaxgan.sample(new, jax.random.key(1), 5)
  assert out.shape == (5, 16, 16, 3)
  assert float(jnp.min(out)) >= -1 and float(jnp.max(out)) <= 1
  z = jaxgan.latents(jax.random.key(1), 5, new.latent_dim)
  np.testing.assert_allclose(out, jaxgan.generate(new, z), rtol=1e-6, atol=1e-6)
  no_ema = jaxgan.generate(new.replace(g_ema_params=None), z)
  assert not np.allclose(out, no_ema)  # sample used the EMA parameters


def test_the_ema_generator_keeps_its_own_batch_norm_statistics():
  # G's running statistics belong to G's current parameters; the EMA parameters get theirs
  # from a forward pass on the step's latents, and generate() evaluates them together.
  state = tiny_dcgan_state(ema_decay=0.5)
  assert_trees_equal(state.g_ema_batch_stats, state.g_batch_stats)
  rng = jax.random.key(3)
  new, _ = jax.jit(jaxgan.train_step)(state, {"image": images(0)}, rng)
  _, g_key = jax.random.split(jax.random.fold_in(rng, 0))  # the G update's latents
  z = jaxgan.latents(g_key, 8, state.latent_dim)
  _, expected = state.generator.apply(
      {"params": new.g_ema_params, "batch_stats": state.g_ema_batch_stats}, z, train=True,
      mutable=["batch_stats"])
  assert_trees_close(new.g_ema_batch_stats, expected["batch_stats"], rtol=1e-5, atol=1e-6)
  assert not np.allclose(new.g_ema_batch_stats["BatchNorm_0"]["mean"],
                         new.g_batch_stats["BatchNorm_0"]["mean"])
  z = jaxgan.latents(jax.random.key(1), 5, new.latent_dim)
  own = new.generator.apply({"params": new.g_ema_params, "batch_stats": new.g_ema_batch_stats},
                            z, train=False)
  np.testing.assert_allclose(jaxgan.generate(new, z), own, rtol=1e-6, atol=1e-6)
  assert tiny_dcgan_state().g_ema_batch_stats is None  # no EMA: nothing to keep
  mlp = jaxgan.create_state(
      jax.random.key(0), generator=jaxgan.models.MLPGenerator(data_shape=(2,), hidden_dims=(8,)),
      discriminator=jaxgan.models.MLPDiscriminator(hidden_dims=(8,)), g_optimizer=optax.sgd(0.1),
      d_optimizer=optax.sgd(0.1), latent_dim=2, data_shape=(2,), ema_decay=0.9)
  assert mlp.g_ema_batch_stats is None  # no BatchNorm: no extra forward pass


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_every_loss_trains_finitely(loss):
  state = jaxgan.create_state(
      jax.random.key(0), generator=jaxgan.models.MLPGenerator(data_shape=(2,), hidden_dims=(8,)),
      discriminator=jaxgan.models.MLPDiscriminator(hidden_dims=(8,)),
      g_optimizer=optax.adam(1e-3), d_optimizer=optax.adam(1e-3), latent_dim=2, data_shape=(2,),
      loss=loss)
  step = jax.jit(jaxgan.train_step)
  x = jax.random.normal(jax.random.key(1), (16, 2))
  for _ in range(3):
    state, metrics = step(state, {"image": x}, jax.random.key(2))
  assert all(np.isfinite(v) for v in metrics.values()), metrics


def test_create_state_traces_under_eval_shape():
  abstract = jax.eval_shape(tiny_dcgan_state_from_key, jax.random.key(0))
  concrete = tiny_dcgan_state_from_key(jax.random.key(0))
  assert ([(a.shape, a.dtype) for a in jax.tree.leaves(abstract)]
          == [(a.shape, a.dtype) for a in jax.tree.leaves(concrete)])


def tiny_dcgan_state_from_key(key):
  return jaxgan.create_state(
      key, generator=jaxgan.models.DCGANGenerator(image_size=16, ngf=8),
      discriminator=jaxgan.models.DCGANDiscriminator(image_size=16, ndf=8),
      g_optimizer=optax.adam(1e-3), d_optimizer=optax.adam(1e-3), latent_dim=16,
      data_shape=(16, 16, 3))


def test_raw_uint32_keys_work_too():
  state = tiny_dcgan_state(seed=0)
  new, _ = jax.jit(jaxgan.train_step)(state, {"image": images(0)}, jax.random.PRNGKey(1))
  assert int(new.step) == 1


def test_clear_errors_for_bad_inputs():
  state = tiny_dcgan_state()
  with pytest.raises(ValueError, match="no 'image' entry"):
    jaxgan.train_step(state, {"x": images(0)}, jax.random.key(0))
  with pytest.raises(ValueError, match=r"shape \(8, 32, 32, 3\) but the state expects"):
    jaxgan.train_step(state, {"image": images(0, size=32)}, jax.random.key(0))
  with pytest.raises(ValueError, match=r"makes samples of shape \(16, 16, 3\) but data_shape is"):
    jaxgan.create_state(jax.random.key(0), generator=state.generator,
                        discriminator=state.discriminator, g_optimizer=optax.sgd(1),
                        d_optimizer=optax.sgd(1), latent_dim=4, data_shape=(32, 32, 3))
  with pytest.raises(ValueError, match="valid losses"):
    tiny_dcgan_state(loss="bce")


def test_pmap_with_axis_name_equals_single_device_on_the_global_batch():
  """Gradients, BatchNorm statistics and noise are global: 4 devices give the 1-device result."""
  n = 4
  state = sgd_state()
  x, rng = images(2, n=8), jax.random.key(9)
  single, m_single = jax.jit(jaxgan.train_step)(state, {"image": x}, rng)
  step = jax.pmap(functools.partial(jaxgan.train_step, axis_name="batch"), axis_name="batch",
                  in_axes=(None, 0, None), devices=jax.devices()[:n])
  multi, m_multi = step(state, {"image": x.reshape(n, 2, *x.shape[1:])}, rng)
  for i in range(n):
    assert_trees_close(jax.tree.map(lambda t: t[i], multi), single, rtol=1e-5, atol=1e-6)
    assert_trees_close(jax.tree.map(lambda t: t[i], m_multi), m_single, rtol=1e-5, atol=1e-6)


def ring_of_gaussians(key, n, std=0.02):
  k_mode, k_noise = jax.random.split(key)
  angle = 2 * jnp.pi * jax.random.randint(k_mode, (n,), 0, 8) / 8
  return jnp.stack([jnp.cos(angle), jnp.sin(angle)], 1) + std * jax.random.normal(k_noise, (n, 2))


def test_learns_a_ring_of_eight_gaussians():
  state = jaxgan.create_state(
      jax.random.key(0),
      generator=jaxgan.models.MLPGenerator(data_shape=(2,), hidden_dims=(128,) * 3),
      discriminator=jaxgan.models.MLPDiscriminator(hidden_dims=(128,) * 3),
      g_optimizer=optax.adam(1e-3, b1=0.5), d_optimizer=optax.adam(1e-3, b1=0.5),
      latent_dim=2, data_shape=(2,))
  data_key, rng = jax.random.key(1), jax.random.key(2)

  @jax.jit
  def train(state):
    def body(state, i):
      return jaxgan.train_step(state, {"image": ring_of_gaussians(jax.random.fold_in(data_key, i),
                                                                  256)}, rng)
    return jax.lax.scan(body, state, jnp.arange(3000))

  state, _ = train(state)
  samples = np.asarray(jaxgan.sample(state, jax.random.key(3), 2000))
  modes = np.stack([np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)], 1)
  dist = np.linalg.norm(samples[:, None] - modes[None], axis=-1)
  near = dist.min(1) < 0.1
  covered = len(set(dist.argmin(1)[near]))
  assert near.mean() >= 0.5, f"only {near.mean():.1%} of samples are within 0.1 of a mode"
  assert covered >= 6, f"only {covered} of 8 modes covered"


@pytest.mark.parametrize("skip", [False, True])
def test_guard_flags_a_planted_nan_and_can_drop_the_update(skip):
  state = tiny_dcgan_state()
  step = jax.jit(jaxgan.guard_nonfinite(skip=skip))
  good, metrics = step(state, {"image": images(0)}, jax.random.key(0))
  assert float(metrics["nonfinite"]) == 0.0
  poisoned = images(1).at[3, 2, 2, 0].set(jnp.nan)  # one NaN pixel
  new, metrics = step(good, {"image": poisoned}, jax.random.key(0))
  assert float(metrics["nonfinite"]) == 1.0 and int(new.step) == 2
  params_finite = all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(new.d_params))
  assert params_finite == skip
  if skip:  # the update was dropped: everything but the step is as before
    assert_trees_equal(new.replace(step=good.step), good)
