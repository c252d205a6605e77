"""Draw a grid of samples (or latent interpolations) from a run's latest checkpoint.

    python -m experiments.sample --workdir=DIR [--num=64] [--out=grid.png] [--interpolate]
"""

import math

import jax
from absl import flags

from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's workdir.", required=True)
flags.DEFINE_integer("num", 64, "Number of images (a square-ish grid).")
flags.DEFINE_string("out", "samples.png", "Output PNG path.")
flags.DEFINE_integer("seed", 0, "Noise seed.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_bool("interpolate", False, "Rows interpolate (slerp) between two random latents.")
flags.DEFINE_integer("columns", 8, "Images per row.")


def main(argv):
  del argv
  from jaxgan import latents, summary, trainer
  from jaxgan.errors import ConfigError

  trainer.quiet_library_logs()
  if FLAGS.num < 1 or FLAGS.columns < 1:
    raise ConfigError("--num and --columns must be >= 1")
  generate, config = trainer.load_generator(FLAGS.workdir, FLAGS.step)
  rng = jax.random.key(FLAGS.seed)
  if FLAGS.interpolate:
    rows = math.ceil(FLAGS.num / FLAGS.columns)
    z = trainer.interpolation_latents(rng, rows, FLAGS.columns, config.latent_dim)
  else:
    z = latents(rng, FLAGS.num, config.latent_dim)
  grid = summary.image_grid(jax.device_get(generate(z)), columns=FLAGS.columns)
  summary.save_png(FLAGS.out, grid)
  print(f"wrote {FLAGS.out} ({z.shape[0]} images)")


if __name__ == "__main__":
  cli.run(main)
