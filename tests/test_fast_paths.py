"""The speed paths compute what the plain ones compute: the tap-matmul kernel gradient, the
phase form of the transposed convolution and its gradients, G's forward pass reused for its
update, bfloat16."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgan
from jaxgan import losses, models, train
from jaxgan.models import layers
from helpers import image_batches, run_steps, sgd_state, tiny_dcgan_state


@pytest.mark.parametrize("kernel,strides,padding", [
    (4, (2, 2), ((1, 1), (1, 1))),  # DCGAN D's layers (input gradient by phases)
    (4, (1, 1), "VALID"),  # DCGAN D's last layer
    (2, (1, 1), "VALID"),  # the phase form's convolution
    (3, (1, 1), "SAME"),
    (4, (2, 2), "VALID"),
    (4, (2, 2), ((1, 0), (2, 1))),  # asymmetric padding
])
def test_fast_convs_have_the_outputs_and_gradients_of_xla(kernel, strides, padding):
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 5))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, 5, 7))
  outs, grads = {}, {}
  for impl in ("xla", "tap_matmul", "patches"):
    f = lambda x, k, impl=impl: layers.conv(x, k, strides, padding, impl=impl)  # noqa: E731
    outs[impl] = f(x, k)
    grads[impl] = jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))(x, k)
  for fast in ("tap_matmul", "patches"):
    np.testing.assert_allclose(outs[fast], outs["xla"], rtol=1e-6, atol=1e-5)
    for got, plain in zip(grads[fast], grads["xla"]):
      np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-4 * np.abs(plain).max())


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 4, 4, 6), 5, (2, 2), ((2, 3), (2, 3))),  # DCGAN-tensorflow's 4 -> 8 (SAME's adjoint)
    ((2, 4, 4, 6), 5, (2, 2), ((3, 3), (3, 3))),  # its 4 -> 7
    ((2, 3, 5, 4), 4, (2, 2), ((2, 2), (2, 2))),  # pytorch's ConvTranspose2d(4, 2, 1), non-square
    ((2, 5, 4, 4), 3, (1, 2), ((0, 1), (3, 1))),  # uneven strides and padding, some cropped
    ((2, 4, 4, 4), 5, (2, 2), ((5, 0), (0, 6))),  # padding past the kernel
])
def test_patches_conv_transpose_has_the_outputs_and_gradients_of_xla(shape, kernel, strides,
                                                                    padding):
  x = jax.random.normal(jax.random.key(0), shape)
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, shape[-1], 3))
  outs, grads = {}, {}
  for impl in ("xla", "patches"):
    f = lambda x, k, impl=impl: layers.conv_transpose(x, k, strides, padding, impl)  # noqa: E731
    outs[impl] = f(x, k)
    grads[impl] = jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))(x, k)
  assert outs["patches"].shape == outs["xla"].shape
  np.testing.assert_allclose(outs["patches"], outs["xla"], rtol=1e-6, atol=1e-5)
  for got, plain in zip(grads["patches"], grads["xla"]):
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-4 * np.abs(plain).max())
  with pytest.raises(ValueError, match="unknown conv_transpose impl 'tap_matmul'"):
    layers.conv_transpose(x, k, strides, padding, "tap_matmul")


@pytest.mark.parametrize("shape", [(3, 4, 4, 6), (2, 3, 5, 4)])
def test_upsample_by_phases_has_the_gradients_of_the_transposed_convolution(shape):
  """The tap-matmul path's input and kernel gradients (those of the adjoint stride-2
  convolution) equal autodiff's through the textbook transposed convolution, on square
  and non-square maps."""
  x = jax.random.normal(jax.random.key(0), shape)
  k = jax.random.normal(jax.random.key(1), (4, 4, shape[-1], 5))
  reference = None
  for fn in (layers.conv_transpose_4x4_s2,
             functools.partial(layers.upsample_by_phases, conv_impl="tap_matmul")):
    out = fn(x, k)
    grads = jax.grad(lambda x, k, fn=fn: jnp.sum(jnp.sin(fn(x, k))), argnums=(0, 1))(x, k)
    if reference is None:
      reference = (out, grads)
      continue
    np.testing.assert_allclose(out, reference[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, reference[1]):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@functools.partial(jax.jit, static_argnums=0)
def _init_and_param_grads(module, inp, key):
  """(variables, gradients of sum(sin(3 * output)) with respect to the parameters, output), in
  training. One compiled program per network: op by op, the same takes ~3x longer."""
  variables = module.init(key, inp)
  def loss(params):
    out, _ = module.apply({**variables, "params": params}, inp, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(3 * out)), out
  return variables, *jax.grad(loss, has_aux=True)(variables["params"])


def _assert_same_results(result, reference, tree_atol: float = 0.0):
  """Leaf by leaf to float rounding; `tree_atol` adds that fraction of the largest entry of
  the whole tree (for leaves that are 0 but for rounding elsewhere in the tree)."""
  scale = max(float(np.abs(want).max()) for want in jax.tree.leaves(reference))
  for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(reference), strict=True):
    np.testing.assert_allclose(got, want, rtol=2e-4,
                               atol=2e-5 * np.abs(want).max() + 1e-7 + tree_atol * scale)


def test_fast_dcgan_paths_give_the_same_outputs_and_gradients():
  z = jax.random.normal(jax.random.key(0), (4, 16))
  x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3), minval=-1, maxval=1)
  reference = None
  for upsample, conv_impl in (("transpose", "xla"), ("phase", "tap_matmul"), ("phase", "xla"),
                              ("subpixel", "tap_matmul"), ("phase", "patches"), ("auto", "auto")):
    g = models.DCGANGenerator(image_size=16, ngf=8, upsample=upsample, conv_impl=conv_impl)
    d = models.DCGANDiscriminator(image_size=16, ndf=8, conv_impl=conv_impl)
    # same keys: same parameters whatever the path
    result = (_init_and_param_grads(g, z, jax.random.key(2))[1:],
              _init_and_param_grads(d, x, jax.random.key(3))[1:])
    if reference is None:
      reference = result
      continue
    _assert_same_results(result, reference)


def test_dcgan_tensorflow_conv_forms_give_the_same_outputs_and_gradients():
  """The DCGAN-tensorflow networks with XLA's convolutions and as patches + one product ("auto"
  picks the latter on CPU): same parameters, outputs and gradients, at 28 and 16 pixels."""
  for size in (28, 16):
    z = jax.random.normal(jax.random.key(0), (4, 16))
    x = jax.random.uniform(jax.random.key(1), (4, size, size, 3), minval=-1, maxval=1)
    reference = None
    for impl in ("xla", "patches", "auto"):
      g = models.DCGANTFGenerator(image_size=size, ngf=4, conv_impl=impl)
      d = models.DCGANTFDiscriminator(image_size=size, ndf=4, conv_impl=impl)
      # (variables, gradients, output) of each network, each compared on its own scale
      result = (*_init_and_param_grads(g, z, jax.random.key(2)),
                *_init_and_param_grads(d, x, jax.random.key(3)))
      if reference is None:
        reference = result
        continue
      # The biases of convolutions followed by BatchNorm have gradient 0; their rounding is
      # that of the network's largest gradients (up to 3e-6 of them here).
      for got, want in zip(result, reference, strict=True):
        _assert_same_results(got, want, tree_atol=1e-5)
  assert models.dcgan_tf.resolve_conv_impl("auto") == ("patches" if layers.on_cpu() else "xla")
  with pytest.raises(ValueError, match="unknown conv_impl 'tap_matmul'.*'auto', 'xla' or"):
    models.DCGANTFDiscriminator(conv_impl="tap_matmul").init(jax.random.key(0), x)


def test_auto_paths_follow_the_backend_and_size():
  fast = "tap_matmul" if layers.on_cpu() else "xla"
  assert layers.resolve_conv_impl("auto") == fast
  assert layers.resolve_conv_impl("auto", macs=layers.TAP_MATMUL_MIN_MACS) == fast
  assert layers.resolve_conv_impl("auto", macs=layers.TAP_MATMUL_MIN_MACS - 1) == "xla"
  assert layers.resolve_conv_impl("xla") == "xla"
  with pytest.raises(ValueError, match="unknown conv impl 'fast'"):
    layers.resolve_conv_impl("fast")
  # Upsampling: the phase form on CPU and for float32 on GPU, the backend's own otherwise.
  resolve = layers.resolve_upsample_impl
  assert resolve("auto", jnp.float32) == resolve("auto", jnp.float32, jax.default_backend())
  assert [resolve("auto", dt, "cpu") for dt in (jnp.float32, jnp.bfloat16)] == ["phase"] * 2
  assert [resolve("auto", dt, "gpu") for dt in (jnp.float32, jnp.bfloat16, jnp.float16)] == [
      "phase", "transpose", "transpose"]
  assert resolve("auto", jnp.float32, "tpu") == "transpose"
  assert resolve("subpixel", jnp.float32, "gpu") == "subpixel"
  with pytest.raises(ValueError, match="unknown upsample impl 'fast'"):
    resolve("fast", jnp.float32)


@pytest.mark.parametrize("simultaneous", [False, True], ids=["alternating", "simultaneous"])
def test_reuse_fake_updates_g_through_the_d_updates_forward_pass(simultaneous):
  """G's update back-propagates through the D update's forward pass of G, against D after its
  update (alternating) or, with simultaneous=True (simultaneous gradient descent, the ALI code
  of PacGAN's 2-D runs), against D as it was before it, parameters and BatchNorm statistics."""
  state = tiny_dcgan_state(reuse_fake=True, simultaneous=simultaneous)
  batch = {"image": image_batches(1)[0]}
  rng = jax.random.key(5)
  new, metrics = jax.jit(train.train_step)(state, batch, rng)

  # D's update is that of the plain step (same keys, same samples).
  plain, _ = jax.jit(train.train_step)(tiny_dcgan_state(), batch, rng)
  for got, want in zip(jax.tree.leaves(new.d_params), jax.tree.leaves(plain.d_params)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

  # G's update: the gradient of -log D(G(z)) at the z of the D update.
  d_key, _ = jax.random.split(jax.random.fold_in(rng, state.step))
  z = train.latents(jax.random.fold_in(d_key, 0), 16, state.latent_dim)
  before, after = (state.d_params, state.d_batch_stats), (new.d_params, new.d_batch_stats)

  def g_loss(params, d_vars):
    fake, stats = train._apply(state.generator, params, state.g_batch_stats, z)
    logits, _ = train._apply(state.discriminator, *d_vars, fake)
    return losses.generator_loss("non_saturating", logits), stats

  (loss, stats), grads = jax.value_and_grad(g_loss, has_aux=True)(
      state.g_params, before if simultaneous else after)
  updates, _ = state.g_optimizer.update(grads, state.g_opt_state, state.g_params)
  want = optax.apply_updates(state.g_params, updates)
  np.testing.assert_allclose(metrics["g_loss"], loss, rtol=1e-5)
  for got, w in zip(jax.tree.leaves((new.g_params, new.g_batch_stats)),
                    jax.tree.leaves((want, stats))):
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
  if simultaneous:  # and not against the updated D, which gives another loss here
    assert abs(float(metrics["g_loss"]) - float(g_loss(state.g_params, after)[0])) > 1e-4


@pytest.mark.parametrize("reuse_fake", [False, True], ids=["fresh_z", "reuse_fake"])
def test_g_steps_updates_g_again_on_the_same_latents_against_the_same_d(reuse_fake):
  """g_steps=2 (DCGAN-tensorflow's "run g_optim twice"): D's update is the plain step's; G takes
  two updates on the step's latents (fresh, or the D update's with reuse_fake), each against D
  after its update, the second from the first's parameters, statistics and optimizer state."""
  state = tiny_dcgan_state(reuse_fake=reuse_fake, g_steps=2)
  batch = {"image": image_batches(1)[0]}
  rng = jax.random.key(5)
  new, metrics = jax.jit(train.train_step)(state, batch, rng)
  plain, _ = jax.jit(train.train_step)(tiny_dcgan_state(reuse_fake=reuse_fake), batch, rng)
  for got, want in zip(jax.tree.leaves(new.d_params), jax.tree.leaves(plain.d_params)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

  d_key, g_key = jax.random.split(jax.random.fold_in(rng, state.step))
  z = train.latents(jax.random.fold_in(d_key, 0) if reuse_fake else g_key, 16, state.latent_dim)

  def g_loss(params, stats):
    fake, stats = train._apply(state.generator, params, stats, z)
    logits, _ = train._apply(state.discriminator, new.d_params, new.d_batch_stats, fake)
    return losses.generator_loss("non_saturating", logits), stats

  params, stats, opt_state, step_losses = state.g_params, state.g_batch_stats, state.g_opt_state, []
  for _ in range(2):
    (loss, stats), grads = jax.value_and_grad(g_loss, has_aux=True)(params, stats)
    updates, opt_state = state.g_optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    step_losses.append(float(loss))
  assert step_losses[1] < step_losses[0]  # the second update starts where the first ended
  np.testing.assert_allclose(metrics["g_loss"], np.mean(step_losses), rtol=1e-5)
  for got, w in zip(jax.tree.leaves((new.g_params, new.g_batch_stats, new.g_opt_state)),
                    jax.tree.leaves((params, stats, opt_state))):
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="g_steps must be >= 1, got 0"):
    tiny_dcgan_state(g_steps=0)


def test_simultaneous_needs_one_d_update_per_step_and_implies_reuse_fake():
  assert tiny_dcgan_state(simultaneous=True).reuse_fake
  with pytest.raises(ValueError, match="simultaneous=True with n_critic=2: .* use n_critic=1 or "
                                       "simultaneous=False"):
    tiny_dcgan_state(simultaneous=True, n_critic=2)


def test_reuse_fake_with_every_g_option_under_pmap_equals_one_device():
  """n_critic, g_steps, feature matching, historical averaging, augmentation: 2 devices ==
  1 device."""
  kwargs = dict(reuse_fake=True, n_critic=2, g_steps=2, generator_objective="feature_matching",
                g_historical_weight=0.01, augment="translation")
  xs = image_batches(2)
  one, m1 = run_steps(jax.jit(train.train_step), sgd_state(**kwargs), xs, jax.random.key(3))
  step = jax.pmap(functools.partial(train.train_step, axis_name="batch"), axis_name="batch",
                  in_axes=(None, 0, None), out_axes=None)
  two, m2 = run_steps(lambda s, b, r: step(s, {"image": b["image"].reshape(2, 8, 16, 16, 3)}, r),
                      sgd_state(**kwargs), xs, jax.random.key(3))
  for got, want in zip(jax.tree.leaves((two, m2)), jax.tree.leaves((one, m1))):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
  assert np.all(np.isfinite(m1[-1]["g_loss"]))


def test_bfloat16_compute_trains_finitely_and_close_to_float32():
  def make(dtype):
    return jaxgan.create_state(
        jax.random.key(0),
        generator=models.DCGANGenerator(image_size=16, ngf=8, dtype=dtype),
        discriminator=models.DCGANDiscriminator(image_size=16, ndf=8, dtype=dtype),
        g_optimizer=optax.adam(2e-4, b1=0.5), d_optimizer=optax.adam(2e-4, b1=0.5),
        latent_dim=16, data_shape=(16, 16, 3), reuse_fake=True)

  xs = image_batches(3)
  f32, m32 = run_steps(jax.jit(train.train_step), make(None), xs, jax.random.key(1))
  b16, m16 = run_steps(jax.jit(train.train_step), make(jnp.bfloat16), xs, jax.random.key(1))
  # Parameters and optimizer states stay float32; only the computation is bfloat16.
  floats = [p for p in jax.tree.leaves((b16.g_params, b16.d_opt_state))
            if np.issubdtype(p.dtype, np.floating)]
  assert {p.dtype for p in floats} == {np.dtype(np.float32)}
  for a, b in zip(m16, m32):
    for k in ("d_loss", "g_loss", "d_real", "d_fake"):
      assert np.isfinite(a[k])
      np.testing.assert_allclose(a[k], b[k], rtol=0.05, atol=0.02)
  moved32 = [np.abs(a - b).mean() for a, b in zip(jax.tree.leaves(f32.g_params),
                                                  jax.tree.leaves(make(None).g_params))]
  diff = [np.abs(a - b).mean() for a, b in zip(jax.tree.leaves(b16.g_params),
                                               jax.tree.leaves(f32.g_params))]
  assert np.mean(diff) < 0.25 * np.mean(moved32)  # the bf16 run took (nearly) the same steps
