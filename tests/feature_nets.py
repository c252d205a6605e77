"""Small feature networks for tests: they stand in for Inception (no weights needed)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan import metrics


class TinyConvNet(nn.Module):
  """uint8 images -> {"features": [N, 16], "logits": [N, 10]}."""

  @nn.compact
  def __call__(self, images):
    x = images.astype(jnp.float32) / 127.5 - 1.0
    x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
    features = jnp.mean(x, axis=(1, 2))
    return {"features": features, "logits": nn.Dense(10)(features)}


def tiny(image_shape=(32, 32, 3)):
  module = TinyConvNet()
  variables = module.init(jax.random.key(0), jnp.zeros((1, *image_shape), jnp.uint8))
  return metrics.ModuleFeatures("tiny", module, variables, logits_key="logits", batch_size=32)
