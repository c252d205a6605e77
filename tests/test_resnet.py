"""SN-ResNet G/D (Miyato et al. 2018) and class-conditional GANs (conditional BatchNorm G,
projection D) fed by batch["label"]."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxgan
from jaxgan.models import ConditionalBatchNorm, SNResNetDiscriminator, SNResNetGenerator

from helpers import assert_two_devices_match, tiny_dcgan_state
from test_train import assert_trees_close


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("size,g_ch,d_ch,g_params,d_params", [
    (32, 256, 128, 4_276_739, 1_053_825),  # SNGAN CIFAR-10: G 4.3M, D 1.1M (Mimicry: 4.3M / 1.1M)
    (64, 64, 64, 12_220_675, 10_141_441),
])
def test_published_architectures_shapes_and_sizes(size, g_ch, d_ch, g_params, d_params):
  g = SNResNetGenerator(image_size=size, ch=g_ch)
  d = SNResNetDiscriminator(image_size=size, ch=d_ch)
  z, x = jnp.zeros((2, 128)), jnp.zeros((2, size, size, 3))
  g_vars, out = jax.eval_shape(lambda: g.init_with_output(jax.random.key(0), z)[::-1])
  d_vars, logits = jax.eval_shape(lambda: d.init_with_output(jax.random.key(0), x)[::-1])
  assert out.shape == (2, size, size, 3) and logits.shape == (2,)
  assert (_count(g_vars["params"]), _count(d_vars["params"])) == (g_params, d_params)
  assert "BatchNorm_0" not in str(jax.tree_util.keystr(d_vars))  # D: spectral norm, no BN
  with pytest.raises(ValueError, match="SN-ResNet image_size must be one of"):
    jax.eval_shape(lambda: SNResNetGenerator(image_size=48).init(jax.random.key(0), z))


def test_conditional_batch_norm_uses_each_samples_class_row():
  x = jax.random.normal(jax.random.key(0), (4, 3, 3, 2))
  labels = jnp.array([0, 2, 2, 1])
  bn = ConditionalBatchNorm(num_classes=3)
  variables = bn.init(jax.random.key(1), x, labels)
  params = variables["params"]
  np.testing.assert_array_equal(params["scale"]["embedding"], np.ones((3, 2)))  # starts as BN
  np.testing.assert_array_equal(params["shift"]["embedding"], np.zeros((3, 2)))
  scale = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
  shift = jnp.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
  out, _ = bn.apply({**variables, "params": {"scale": {"embedding": scale},
                                             "shift": {"embedding": shift}}},
                    x, labels, mutable=["batch_stats"])
  mean = x.mean(axis=(0, 1, 2))
  normed = (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(axis=(0, 1, 2)) + 1e-5)
  expected = normed * scale[labels][:, None, None] + shift[labels][:, None, None]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_projection_discriminator_adds_the_class_embedding_inner_product():
  d = SNResNetDiscriminator(image_size=32, ch=4, num_classes=5)
  x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
  variables = d.init(jax.random.key(1), x, labels=jnp.zeros(3, jnp.int32))

  def run(labels):
    logits, out = d.apply(variables, x, labels=labels, mutable=["batch_stats", "intermediates"])
    return logits, out["intermediates"]["features"][0], out["batch_stats"]

  a, b = jnp.array([0, 1, 2]), jnp.array([4, 4, 3])
  logits_a, h, stats = run(a)
  logits_b, h_b, _ = run(b)
  np.testing.assert_array_equal(h, h_b)  # the features do not depend on the label
  embed = variables["params"]["embed"]["embedding"]
  sigma = stats["embed_sn"]["embed/embedding/sigma"]
  expected = jnp.sum((embed[a] - embed[b]) / sigma * h, axis=-1)
  np.testing.assert_allclose(logits_a - logits_b, expected, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="class-conditional.*call it with labels="):
    d.apply(variables, x, mutable=["batch_stats"])


def _conditional_state(**kwargs):
  return jaxgan.create_state(
      jax.random.key(0), generator=SNResNetGenerator(image_size=32, ch=8, num_classes=3),
      discriminator=SNResNetDiscriminator(image_size=32, ch=8, num_classes=3),
      g_optimizer=optax.sgd(0.05, momentum=0.9), d_optimizer=optax.sgd(0.05, momentum=0.9),
      latent_dim=16, data_shape=(32, 32, 3), loss="hinge", num_classes=3, **kwargs)


def test_conditional_step_under_pmap_equals_one_device_and_samples_by_class():
  state = _conditional_state()
  x = jax.random.uniform(jax.random.key(2), (8, 32, 32, 3), minval=-1, maxval=1)
  batch = {"image": x, "label": jnp.array([0, 1, 2, 0, 1, 2, 0, 1])}
  rng = jax.random.key(9)
  single, m_single = jax.jit(jaxgan.train_step)(state, batch, rng)
  assert all(np.isfinite(float(v)) for v in m_single.values())
  # the class embedding of D and the per-class BN rows of G receive gradients
  assert not np.allclose(single.d_params["embed"]["embedding"],
                         state.d_params["embed"]["embedding"])
  g_scale = "GeneratorBlock_0/ConditionalBatchNorm_0/scale/embedding".split("/")
  pick = lambda p: functools.reduce(lambda t, k: t[k], g_scale, p)  # noqa: E731
  assert not np.allclose(pick(single.g_params), pick(state.g_params))
  assert_two_devices_match(state, batch, rng, single, m_single, rtol=1e-4, atol=1e-5)
  # generation: labels pick the class; without them classes come in turn 0, 1, 2, 0, ...
  z = jaxgan.latents(jax.random.key(3), 4, 16)
  by_class = jaxgan.generate(single, z, labels=jnp.array([0, 1, 2, 0]))
  np.testing.assert_allclose(jaxgan.generate(single, z), by_class, rtol=1e-6, atol=1e-6)
  assert not np.allclose(by_class, jaxgan.generate(single, z, labels=jnp.array([1, 1, 1, 1])))
  assert jaxgan.sample(single, jax.random.key(4), 5).shape == (5, 32, 32, 3)


def test_conditional_errors_are_clear():
  state = _conditional_state()
  x = jnp.zeros((4, 32, 32, 3))
  with pytest.raises(ValueError, match=r"class-conditional \(num_classes=3\) but batch\['label'\] "
                                       r"is missing; pass integer labels of shape \[4\]"):
    jaxgan.train_step(state, {"image": x}, jax.random.key(0))
  with pytest.raises(ValueError, match=r"batch\['label'\] is float32\(4,\)"):
    jaxgan.train_step(state, {"image": x, "label": jnp.zeros(4)}, jax.random.key(0))
  with pytest.raises(ValueError, match="the generator DCGANGenerator is unconditional"):
    tiny_dcgan_state(num_classes=3)
  with pytest.raises(ValueError, match="PacGAN packing is not defined for class-conditional"):
    _conditional_state(pack=2)
  with pytest.raises(ValueError, match="labels were given but the GAN is unconditional"):
    jaxgan.generate(tiny_dcgan_state(), jnp.zeros((2, 16)), labels=jnp.zeros(2, jnp.int32))
