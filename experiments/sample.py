"""Draw a grid of samples (or latent interpolations) from a run's latest checkpoint.

    python -m experiments.sample --workdir=DIR [--num=64] [--out=grid.png] [--interpolate]
    python -m experiments.sample --workdir=DIR --drs [--drs_steps=1000] [--drs_real=10000]

`--drs` filters G's samples by discriminator rejection sampling (`jaxgan.sampling`): D is
first trained alone against the fixed G on real images of the run's dataset, then each
sample of G is kept with the probability D's calibrated logit gives it.
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
cli.define_drs_flags()


def main(argv):
  del argv
  from jaxgan import latents, summary, trainer
  from jaxgan.errors import ConfigError

  trainer.quiet_library_logs()
  if FLAGS.num < 1 or FLAGS.columns < 1:
    raise ConfigError("--num and --columns must be >= 1")
  if FLAGS.drs:
    if FLAGS.interpolate:
      raise ConfigError("--drs filters random samples; it cannot be combined with --interpolate")
    sampler, config, _ = cli.drs_sampler(FLAGS.workdir, FLAGS.step, FLAGS.seed)
    with cli.drs_shortfall():
      images = sampler.sample(FLAGS.num)
    stats = sampler.stats
    print(f"DRS: kept {stats.accepted} of {stats.candidates} samples ({stats.acceptance:.1%})")
  else:
    generate, config = trainer.load_generator(FLAGS.workdir, FLAGS.step)
    rng = jax.random.key(FLAGS.seed)
    if FLAGS.interpolate:
      rows = math.ceil(FLAGS.num / FLAGS.columns)
      z = trainer.interpolation_latents(rng, rows, FLAGS.columns, config.latent_dim,
                                        config.latent_distribution)
    else:
      z = latents(rng, FLAGS.num, config.latent_dim, distribution=config.latent_distribution)
    images = jax.device_get(generate(z))
  grid = summary.image_grid(images, columns=FLAGS.columns)
  summary.save_png(FLAGS.out, grid)
  print(f"wrote {FLAGS.out} ({len(images)} images)")


if __name__ == "__main__":
  cli.run(main)
