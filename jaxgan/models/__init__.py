"""Generator and discriminator modules. Every module is called as `module(x, train=...)`."""

from jaxgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from jaxgan.models.layers import Upsample2x
from jaxgan.models.mlp import MLPDiscriminator, MLPGenerator

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "MLPGenerator", "MLPDiscriminator",
           "Upsample2x"]
