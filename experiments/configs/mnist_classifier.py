"""The MNIST digit classifier that labels Stacked-MNIST samples: `python -m experiments.mnist_classifier`.

    --config=experiments/configs/mnist_classifier.py         4 epochs on all 60k images (>= 99%)
    --config=experiments/configs/mnist_classifier.py:smoke   a few hundred steps (tests)
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data_dir = "../shared/data/mnist"  # the original IDX files; "" = tfds 'mnist'
  c.epochs = 4
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.seed = 0
  c.num_train = 0  # 0 = all 60,000 training images
  c.min_accuracy = 0.99  # fail (exit 2, nothing saved) below this test accuracy
  if arg == "smoke":
    c.epochs = 1
    c.num_train = 2_048
    c.min_accuracy = 0.0
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use mnist_classifier.py or "
                     "mnist_classifier.py:smoke")
  return c
