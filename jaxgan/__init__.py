"""jaxgan: functional GAN training in JAX.

    state = jaxgan.create_state(key, generator=..., discriminator=..., ...)
    state, metrics = jax.jit(jaxgan.train_step, donate_argnums=0)(state, {"image": x}, key)
    images = jaxgan.sample(state, key, 16)
"""

from jaxgan import losses, models, parallel
from jaxgan.train import (GANState, create_state, generate, guard_nonfinite, latents, latents_for,
                          sample, train_step)

__version__ = "0.1.0"

__all__ = ["GANState", "create_state", "generate", "guard_nonfinite", "latents", "latents_for",
           "losses", "models", "parallel", "sample", "train_step"]
