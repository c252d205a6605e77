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
