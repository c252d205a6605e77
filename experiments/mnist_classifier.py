"""Train the MNIST classifier that labels Stacked-MNIST samples; saved with orbax.

    python -m experiments.mnist_classifier --workdir=DIR \
        [--config=experiments/configs/mnist_classifier.py] [--config.data_dir=../shared/data/mnist]

Writes DIR/params (orbax) and DIR/metrics.json (test accuracy per epoch). A
classifier below `config.min_accuracy` is an error and is not saved.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from experiments import cli

DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "mnist_classifier.py")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for the classifier (params/, metrics.json).",
                    required=True)
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Classifier configuration.",
                                lock_config=True)


def main(argv):
  del argv
  from jaxgan import mnist, trainer
  from jaxgan.errors import ConfigError

  trainer.quiet_library_logs()
  c = FLAGS.config
  train = mnist.load(c.data_dir, "train")
  if c.num_train:
    train = (train[0][:c.num_train], train[1][:c.num_train])
  params, metrics = mnist.train_classifier(train, mnist.load(c.data_dir, "test"), epochs=c.epochs,
                                           batch_size=c.batch_size, learning_rate=c.learning_rate,
                                           seed=c.seed)
  if metrics["test_accuracy"] < c.min_accuracy:
    raise ConfigError(f"test accuracy {metrics['test_accuracy']:.4f} is below "
                      f"config.min_accuracy={c.min_accuracy}; train longer (config.epochs) - "
                      "nothing was saved")
  out = mnist.save_classifier(FLAGS.workdir, params, {**metrics, "data_dir": c.data_dir})
  print(f"test accuracy {metrics['test_accuracy']:.4f} after {c.epochs} epochs -> {out}")


if __name__ == "__main__":
  cli.run(main)
