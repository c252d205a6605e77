"""Stacked MNIST (1000 modes): train DCGAN / PacDCGAN, count the modes of 26k samples.

    python -m experiments.mnist_classifier --workdir=CLF
    python -m experiments.stacked_mnist --workdir=DIR --config.classifier_dir=CLF \
        [--config=experiments/configs/stacked_mnist.py[:cpu]] [--config.pack=2]

Writes DIR/results.json (modes of 1000 and KL to uniform: means and per seed, and
the real data's own scores), DIR/metrics.jsonl and DIR/samples_seed0.png. The same
command again resumes a stopped run; with a larger --config.num_steps it trains a finished
run further (at a constant learning rate, while the run is on its first seed).

    python -m experiments.stacked_mnist --workdir=DIR --rescore=CLF2

scores the newest checkpoint in DIR again (the same samples and real images) with the
classifier in CLF2, to see how much the row depends on its classifier; writes nothing.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from experiments import cli

DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "stacked_mnist.py")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for results.json, metrics.jsonl, samples.",
                    required=True)
flags.DEFINE_string("rescore", None, "A classifier directory: score the newest checkpoint in "
                    "--workdir again with it (the config flags are then ignored); writes nothing.")
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Benchmark configuration.",
                                lock_config=True)


def main(argv):
  del argv
  from jaxgan import stacked_mnist, trainer

  trainer.quiet_library_logs()
  if FLAGS.rescore:
    r = stacked_mnist.rescore(FLAGS.workdir, FLAGS.rescore)
    print(f"seed {r['seed']} step {r['step']}: {r['modes']}/1000 modes, KL {r['kl']:.3f} with "
          f"classifier {r['classifier_digest']} (the run's own: {r['scored_by_digest']}); real "
          f"data: {r['real_data']['modes']} modes, KL {r['real_data']['kl']:.3f}")
    return
  r = stacked_mnist.run(FLAGS.config, FLAGS.workdir)
  print(f"Stacked MNIST: {r['modes']:.1f}/1000 modes, KL {r['kl']:.3f} "
        f"({cli.seeds_phrase(r['num_seeds'])}; real data: {r['real_data']['modes']} modes, "
        f"KL {r['real_data']['kl']:.3f}) -> {FLAGS.workdir}/results.json")


if __name__ == "__main__":
  cli.run(main)
