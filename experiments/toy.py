"""The 2-D mixture mode-collapse benchmark, all seeds in one jitted program.

    python -m experiments.toy --config=experiments/configs/toy.py:ring --workdir=DIR \
        [--config.num_seeds=10] [--config.pack=4]

Variants: ring | grid (PacGAN's baseline GAN), ring-best | grid-best (our best setting),
smoke (tests).

Writes DIR/results.json (modes, hq, reverse_kl: means over seeds, and per seed),
DIR/metrics.jsonl and DIR/samples_seed0.png.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from experiments import cli

DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "toy.py")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for results.json, metrics.jsonl, the plot.",
                    required=True)
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG + ":ring", "Benchmark configuration.",
                                lock_config=True)


def main(argv):
  del argv
  from jaxgan import mixture_benchmark, trainer

  trainer.quiet_library_logs()
  r = mixture_benchmark.run(FLAGS.config, FLAGS.workdir)
  print(f"{r['mixture']}: {r['modes']:.2f}/{r['num_modes']} modes, {100 * r['hq']:.1f}% HQ, "
        f"reverse KL {r['reverse_kl']:.3f} (mean of {r['num_seeds']} seeds) -> "
        f"{FLAGS.workdir}/results.json")


if __name__ == "__main__":
  cli.run(main)
