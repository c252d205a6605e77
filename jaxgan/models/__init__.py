"""Generator and discriminator modules. Every module is called as `module(x, train=...)`;
class-conditional ones as `module(x, labels=y, train=...)`."""

from jaxgan.models import resnet
from jaxgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from jaxgan.models.dcgan_tf import DCGANTFDiscriminator, DCGANTFGenerator
from jaxgan.models.layers import Upsample2x
from jaxgan.models.mlp import MLPDiscriminator, MLPGenerator
from jaxgan.models.resnet import ConditionalBatchNorm, SNResNetDiscriminator, SNResNetGenerator

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "DCGANTFGenerator", "DCGANTFDiscriminator",
           "MLPGenerator", "MLPDiscriminator",
           "SNResNetGenerator", "SNResNetDiscriminator", "ConditionalBatchNorm", "Upsample2x",
           "resnet"]
