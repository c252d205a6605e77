"""Test set-up: 8 simulated CPU devices (set before JAX initialises) and shared fixtures."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import jaxgan  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_dcgan_state(seed=0, *, image_size=16, channels=3, loss="non_saturating", **kwargs):
  """A DCGAN small enough to compile in seconds."""
  return jaxgan.create_state(
      jax.random.key(seed),
      generator=jaxgan.models.DCGANGenerator(image_size=image_size, channels=channels, ngf=8),
      discriminator=jaxgan.models.DCGANDiscriminator(image_size=image_size, channels=channels,
                                                     ndf=8),
      g_optimizer=kwargs.pop("g_optimizer", optax.adam(2e-4, b1=0.5)),
      d_optimizer=kwargs.pop("d_optimizer", optax.adam(2e-4, b1=0.5)),
      latent_dim=kwargs.pop("latent_dim", 16), data_shape=(image_size, image_size, channels),
      loss=loss, **kwargs)


@pytest.fixture
def shared_data():
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not available: {SHARED_DATA} is absent (it sits beside the checkout)")
  return SHARED_DATA
