"""Train a GAN on CelebA 64x64 (or any image data), resuming from the workdir's checkpoints.

    python -m experiments.celeba --workdir=DIR [--config=experiments/configs/celeba.py[:smoke]] \
        [--config.KEY=VALUE ...]
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from experiments import cli

DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "celeba.py")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, samples and logs.", required=True)
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Training configuration file.",
                                lock_config=True)


def main(argv):
  del argv
  from jaxgan import parallel, trainer

  trainer.quiet_library_logs()
  parallel.initialize_distributed(FLAGS.config.multihost)  # before any other JAX call
  trainer.train(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
