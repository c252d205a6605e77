"""The benchmarks' own arithmetic (the model FLOPs that MFU and GFLOP/s figures divide by), and
that they time what the programs run."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgan
from jaxgan.models import layers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import toy_step  # noqa: E402
import train_step as train_step_benchmark  # noqa: E402

from jaxgan import mixture_benchmark  # noqa: E402


def _xla_flops(fn, *args) -> float:
  """XLA's own count of a function's FLOPs (valid kernel taps only, padding excluded)."""
  analysis = jax.jit(fn).lower(*args).cost_analysis()
  return float((analysis[0] if isinstance(analysis, list) else analysis)["flops"])


def test_iteration_flops_count_the_passes_xla_counts_in_the_step():
  """One DCGAN iteration = 3 forward passes of G and 8 of D less 2 of D's first layer, as
  XLA counts the whole jitted step (the straightforward paths, so no structural zeros).
  The step's elementwise work (BatchNorm, activations, Adam) adds ~1.3% to XLA's count."""
  batch = 4
  g = jaxgan.models.DCGANGenerator(upsample="transpose", conv_impl="xla")
  d = jaxgan.models.DCGANDiscriminator(conv_impl="xla")
  z, images = jnp.zeros((batch, 100)), jnp.zeros((batch, 64, 64, 3))
  g_vars = jax.eval_shape(lambda: g.init(jax.random.key(0), z, train=False))
  d_vars = jax.eval_shape(lambda: d.init(jax.random.key(0), images, train=False))
  g_forward = _xla_flops(lambda v, z: g.apply(v, z, train=False), g_vars, z)
  d_forward = _xla_flops(lambda v, x: d.apply(v, x, train=False), d_vars, images)
  first_kernel = d_vars["params"]["Conv_0"]["kernel"]
  d_first = _xla_flops(lambda x, k: layers._lax_conv(x, k, (2, 2), ((1, 1), (1, 1))),
                       images, first_kernel)

  state = jax.eval_shape(lambda: jaxgan.create_state(
      jax.random.key(0), generator=g, discriminator=d, g_optimizer=optax.adam(2e-4, b1=0.5),
      d_optimizer=optax.adam(2e-4, b1=0.5), latent_dim=100, data_shape=(64, 64, 3),
      reuse_fake=True))
  step = _xla_flops(jaxgan.train_step, state, {"image": images}, jax.random.key(1))
  predicted = train_step_benchmark.iteration_flops(g_forward, d_forward, d_first)
  np.testing.assert_allclose(predicted, step, rtol=0.03)
  # One D pass fewer (the count before this test existed) is 10% short of XLA's.
  assert step - (predicted - d_forward) > 0.08 * step


def test_dcgan_forward_flops_count_every_tap_as_pytorch_computes_it():
  """The closed forms against XLA's count of the same layers written so that XLA counts every
  tap: D's convolutions VALID on inputs padded by hand, G's transposed convolutions as
  PyTorch's GEMM (each input pixel times all 16 taps) before col2im, at batch 1."""
  g_forward, d_forward, d_first = train_step_benchmark.dcgan_forward_flops()
  d_layers, shape = [], (1, 64, 64, 3)
  for cout in (64, 128, 256, 512):
    x = jnp.zeros((1, shape[1] + 2, shape[2] + 2, shape[3]))
    kernel = jnp.zeros((4, 4, shape[3], cout))
    d_layers.append(_xla_flops(
        lambda x, k: layers._lax_conv(x, k, (2, 2), ((0, 0), (0, 0))), x, kernel))
    shape = (1, shape[1] // 2, shape[2] // 2, cout)
  last = _xla_flops(lambda x, k: layers._lax_conv(x, k, (1, 1), ((0, 0), (0, 0))),
                    jnp.zeros((1, 4, 4, 512)), jnp.zeros((4, 4, 512, 1)))
  assert d_first == d_layers[0]
  assert d_forward == sum(d_layers) + last
  gemm = lambda x, k: jnp.einsum("bhwc,ck->bhwk", x, k)  # noqa: E731
  g_layers = [_xla_flops(gemm, jnp.zeros((1, 1, 1, 100)), jnp.zeros((100, 16 * 512)))]
  for hw, cin, cout in ((4, 512, 256), (8, 256, 128), (16, 128, 64), (32, 64, 3)):
    g_layers.append(_xla_flops(gemm, jnp.zeros((1, hw, hw, cin)), jnp.zeros((cin, 16 * cout))))
  assert g_forward == sum(g_layers)


def test_toy_chunks_of_any_length_train_the_same_steps():
  """The toy benchmark's trainer (`chunk_trainer`, which `benchmarks/toy_step.py` times at its
  own chunk length) trains the same run whether its steps come in one chunk or in two."""
  c = toy_step.variant_config("smoke+pack=2")
  keys = mixture_benchmark.seed_streams(c.seed, c.num_seeds)
  data = mixture_benchmark.training_points(c, keys)
  args = (data, keys["train"], keys["minibatch"])
  whole, _ = mixture_benchmark.chunk_trainer(c, 6)(mixture_benchmark.init_states(c, keys), *args)
  halves = mixture_benchmark.init_states(c, keys)
  for _ in range(2):
    halves, losses = mixture_benchmark.chunk_trainer(c, 3)(halves, *args)
  assert np.asarray(losses["d_loss"]).shape == (c.num_seeds,)
  assert int(halves.step[0]) == int(whole.step[0]) == 6
  # Two states' static fields (modules, optimizers) are distinct objects: compare the leaves.
  for a, b in zip(jax.tree.leaves(halves), jax.tree.leaves(whole), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_toy_step_variants_and_a_measurement():
  c = toy_step.variant_config("grid+pack=4+simultaneous=True+g_lr=2e-4")
  assert (c.mixture, c.pack, c.simultaneous, c.g_lr) == ("grid", 4, True, 2e-4)
  r = toy_step.measure("smoke", num_seeds=2, steps=4, repeats=1)
  assert r["seeds"] == 2 and r["step_ms"] > 0 and r["gflops_per_s"] > 0
  assert r["seed_step_ms"] == pytest.approx(r["step_ms"] / 2)


@pytest.mark.parametrize("variant, message", [
    ("smok", "unknown config variant 'smok'"),
    ("smoke+pakc=2", "'pakc=2' is not key=value with a key of toy.py's config"),
    ("smoke+pack=two", "config.pack='two' is not of type int, as its default 1"),
    ("smoke+pack=0", "config.pack must be a positive integer, got 0"),
])
def test_toy_step_refuses_bad_variants_in_one_line(variant, message):
  with pytest.raises(toy_step.VariantError, match=message):
    toy_step.variant_config(variant)


def test_toy_step_reports_a_failed_measurement_in_its_row():
  """XLA flags the backend refuses fail that row (exit 1), with XLA's own one-line reason."""
  out = subprocess.run([sys.executable, toy_step.__file__, "--variants=smoke", "--seeds=1",
                        "--steps=2", "--repeats=1", "--xla_flags=--xla_no_such_flag=1"],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  assert "smoke | 1 | --xla_no_such_flag=1 | failed: exit" in out.stdout
  assert "Unknown flag in XLA_FLAGS: --xla_no_such_flag=1" in out.stdout
