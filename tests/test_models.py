import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import models
from jaxgan.models import layers


def count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def init(module, shape):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(shape), train=False))


def test_default_parameter_counts_match_pytorch_dcgan():
  g = init(models.DCGANGenerator(), (1, 100))
  d = init(models.DCGANDiscriminator(), (1, 64, 64, 3))
  assert count(g["params"]) == 3_576_704
  assert count(d["params"]) == 2_765_568


@pytest.mark.parametrize("size,channels", [(32, 3), (64, 1), (16, 3)])
def test_shapes_at_other_resolutions_and_channels(size, channels):
  g = models.DCGANGenerator(image_size=size, channels=channels, ngf=8)
  d = models.DCGANDiscriminator(image_size=size, channels=channels, ndf=8)
  images = jax.eval_shape(lambda: g.init_with_output(jax.random.key(0), jnp.zeros((5, 7)))[0])
  logits = jax.eval_shape(lambda x: d.init_with_output(jax.random.key(0), x)[0], images)
  assert images.shape == (5, size, size, channels)
  assert logits.shape == (5,)


def test_dcgan_tensorflow_networks_at_28_pixels():
  """PacGAN's Stacked MNIST networks (DCGAN-tensorflow's): 28 -> 14 -> 7 -> 4 -> 2, 5x5 kernels
  with biases, BatchNorm scale and offset; parameter counts by layer."""
  g = init(models.DCGANTFGenerator(), (1, 100))
  d = init(models.DCGANTFDiscriminator(), (1, 28, 28, 3))
  conv = lambda i, o: 25 * i * o + o  # noqa: E731
  assert count(g["params"]) == (100 * 512 * 4 + 512 * 4 + conv(512, 256) + conv(256, 128)
                                + conv(128, 64) + conv(64, 3) + 2 * (512 + 256 + 128 + 64))
  assert count(d["params"]) == (conv(3, 64) + conv(64, 128) + conv(128, 256) + conv(256, 512)
                                + 2 * 2 * 512 + 1 + 2 * (128 + 256 + 512))
  images = jax.eval_shape(lambda: models.DCGANTFGenerator(ngf=4).init_with_output(
      jax.random.key(0), jnp.zeros((5, 7)))[0])
  assert images.shape == (5, 28, 28, 3)
  with pytest.raises(ValueError, match="image_size >= 16"):
    models.DCGANTFGenerator(image_size=8).init(jax.random.key(0), jnp.zeros((1, 4)))


@pytest.mark.parametrize("in_size,out_size", [(2, 4), (4, 7), (7, 14), (14, 28), (16, 32)])
@pytest.mark.parametrize("impl", ["xla", "patches"])
def test_dcgan_tensorflow_transposed_convolution_is_the_transpose_of_a_same_convolution(
    in_size, out_size, impl):
  """TensorFlow's conv2d_transpose(padding="SAME", output_shape) is the adjoint of the stride-2
  SAME convolution from out_size to in_size; the generator's layers must be exactly that, in
  either form, and keep flax's ConvTranspose parameters (the runs saved before the forms)."""
  from jaxgan.models.dcgan_tf import ConvTranspose, _same_transpose_padding
  import flax.linen as nn
  pad = _same_transpose_padding(in_size, out_size)
  layer = ConvTranspose(3, (pad, pad), impl)
  x = jax.random.normal(jax.random.key(0), (2, in_size, in_size, 4))
  params = layer.init(jax.random.key(1), x)
  flax_layer = nn.ConvTranspose(3, (5, 5), strides=(2, 2), padding=(pad, pad),
                                kernel_init=nn.initializers.normal(0.02))
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, flax_layer.init(jax.random.key(1), x))
  params = {"params": {**params["params"], "bias": jnp.arange(3.0)}}
  out = layer.apply(params, x)
  assert out.shape == (2, out_size, out_size, 3)
  np.testing.assert_allclose(out, flax_layer.apply(params, x), rtol=1e-5, atol=1e-5)
  kernel = params["params"]["kernel"]  # [5, 5, 4, 3]
  forward_kernel = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # [5, 5, 3, 4]
  forward = lambda v: jax.lax.conv_general_dilated(  # noqa: E731
      v, forward_kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  _, transpose = jax.vjp(forward, jnp.zeros((2, out_size, out_size, 3)))
  np.testing.assert_allclose(out - jnp.arange(3.0), transpose(x)[0], rtol=1e-5, atol=1e-5)


def test_bad_image_size_is_a_clear_error():
  with pytest.raises(ValueError, match="power of two"):
    models.DCGANGenerator(image_size=48).init(jax.random.key(0), jnp.zeros((1, 4)))


def test_dcgan_initialisation_statistics():
  v = models.DCGANGenerator(ngf=32).init(jax.random.key(0), jnp.zeros((1, 100)), train=False)
  kernels = [x for p, x in jax.tree_util.tree_leaves_with_path(v["params"])
             if "kernel" in jax.tree_util.keystr(p)]
  flat = np.concatenate([np.ravel(k) for k in kernels])
  assert abs(flat.mean()) < 1e-3 and abs(flat.std() - 0.02) < 1e-3
  scales = np.concatenate([np.ravel(x) for p, x in jax.tree_util.tree_leaves_with_path(v["params"])
                           if "scale" in jax.tree_util.keystr(p)])
  assert abs(scales.mean() - 1) < 5e-3 and abs(scales.std() - 0.02) < 5e-3


def torch_conv_transpose(x, kernel, stride, padding):
  """Direct NumPy transcription of torch.nn.functional.conv_transpose2d (NHWC, kernel [kh,kw,i,o])."""
  b, h, w, _ = x.shape
  k = kernel.shape[0]
  full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, kernel.shape[-1]))
  for i in range(h):
    for j in range(w):
      full[:, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum(
          "bc,hwco->bhwo", x[:, i, j], kernel)
  return full[:, padding:full.shape[1] - padding, padding:full.shape[2] - padding]


@pytest.mark.parametrize("impl", layers.UPSAMPLE_IMPLS)
def test_upsample_equals_pytorch_conv_transpose(impl):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  kernel = rng.normal(size=(4, 4, 3, 4)).astype(np.float32)
  y = models.Upsample2x(4, impl=impl).apply({"params": {"kernel": kernel}}, x)
  np.testing.assert_allclose(y, torch_conv_transpose(x, kernel, 2, 1), rtol=1e-5, atol=1e-5)


def test_project_equals_pytorch_conv_transpose_of_1x1_input():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(3, 7)).astype(np.float32)
  kernel = rng.normal(size=(4, 4, 7, 5)).astype(np.float32)
  y = layers.Project(5).apply({"params": {"kernel": kernel}}, z)
  np.testing.assert_allclose(y, torch_conv_transpose(z[:, None, None], kernel, 1, 0),
                             rtol=1e-5, atol=1e-5)


def test_mlp_models():
  g = models.MLPGenerator(data_shape=(2,), hidden_dims=(16, 16), batch_norm=True)
  x, gv = g.init_with_output(jax.random.key(0), jnp.zeros((4, 3)), train=False)
  assert x.shape == (4, 2) and "batch_stats" in gv
  logits, _ = models.MLPDiscriminator(hidden_dims=(8,)).init_with_output(jax.random.key(0), x)
  assert logits.shape == (4,)
  # init_std: PacGAN's N(0, 0.02) weights on every layer (biases zero)
  d = models.MLPDiscriminator(hidden_dims=(200, 200), maxout=5, init_std=0.02)
  params = d.init(jax.random.key(1), jnp.zeros((4, 2)))["params"]
  kernels = np.concatenate([np.ravel(p["kernel"]) for p in params.values()])
  assert np.std(kernels) == pytest.approx(0.02, rel=0.02) and abs(np.mean(kernels)) < 1e-3
  assert all(not np.any(p["bias"]) for p in params.values())
