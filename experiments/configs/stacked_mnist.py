"""Stacked MNIST (1000 modes; PacGAN Table 2): `python -m experiments.stacked_mnist`.

    --config=experiments/configs/stacked_mnist.py        the full protocol (GPU): DCGAN 64/64,
                                                         128k images, 26k samples, 20k steps
    --config=experiments/configs/stacked_mnist.py:cpu    reduced for a 2-core CPU: widths 32/32,
                                                         2k steps (one pass over 128k images)
    --config=experiments/configs/stacked_mnist.py:pacgan PacGAN's released code's protocol (GPU):
                                                         DCGAN-tensorflow's networks at 28x28,
                                                         real pixels in [0, 1], digits from
                                                         MNIST train + test, packs formed once
                                                         and read in order, G per pack slot,
                                                         2 G steps per D step, z ~ U(-1, 1),
                                                         100k D steps, evaluated every epoch
    --config=experiments/configs/stacked_mnist.py:smoke  tiny and short (tests)

Always pass --config.classifier_dir=DIR, a classifier trained by
`python -m experiments.mnist_classifier --workdir=DIR`. `--config.pack=2..4` is PacDCGAN;
as in PacGAN, `batch_size` counts what D judges, so PacDCGAN-m takes batch_size x m
images per step.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data_dir = "../shared/data/mnist"  # the original IDX files; "" = tfds 'mnist'
  c.classifier_dir = ""  # required: see experiments.mnist_classifier
  c.seed = 0
  c.num_seeds = 1  # trained one after another
  c.num_train = 128_000
  c.batch_size = 64
  c.num_steps = 20_000
  c.eval_every = 5_000
  c.eval_samples = 26_000
  c.latent_dim = 100
  c.image_size = 32  # MNIST's 28 pixels padded to 32; 28 needs architecture="dcgan_tf"
  # "dcgan": pytorch/examples' DCGAN (jaxgan.models.DCGAN*); "dcgan_tf": DCGAN-tensorflow's
  # networks (5x5 kernels, SAME padding, any size; jaxgan.models.DCGANTF*), PacGAN's code's
  c.architecture = "dcgan"
  # Real pixels in [-1, 1] ("signed", G's tanh range) or [0, 1] ("unit", as PacGAN's code
  # feeds them; the classifier reads either)
  c.real_range = "signed"
  c.digit_source = "train"  # the MNIST images stacked: "train" (60k) or "train+test" (70k)
  # "random": each step draws batch_size x pack rows of the num_train stacked images anew;
  # "epochs": num_train packs, each of `pack` images drawn with replacement from the num_train
  # stacked images, formed once and read in order, epoch after epoch (PacGAN's code)
  c.real_order = "random"
  # With pack > 1: G run once per pack slot, BatchNorm statistics per slot (PacGAN's code)
  c.generator_per_slot = False
  # How the convolutions run: "auto" (the fastest exact form per backend), "xla" (the
  # backend's own), "tap_matmul" ("dcgan" only), "patches"; the same results to rounding
  c.conv_impl = "auto"
  c.ngf = 64
  c.ndf = 64
  c.loss = "non_saturating"
  c.optimizer = "adam"  # adam | rmsprop (the original WGAN's; uses rms_decay, not b1/b2)
  c.g_lr = 2e-4
  c.d_lr = 2e-4
  c.b1 = 0.5
  c.b2 = 0.999
  c.rms_decay = 0.99  # rmsprop only: PyTorch's RMSprop alpha
  c.lr_schedule = "constant"  # constant | linear | cosine: decay to 0 at num_steps
  c.n_critic = 1
  # G updates per step, on the same latents (DCGAN-tensorflow and PacGAN's Stacked MNIST code: 2)
  c.g_steps = 1
  # z ~ N(0, I); "uniform": U(-1, 1), as Radford et al.'s DCGAN and PacGAN's Stacked MNIST code
  c.latent_distribution = "normal"
  c.pack = 1
  c.ema_decay = 0.0
  # "Improved Techniques for Training GANs" (Salimans et al. 2016), as in toy.py
  c.label_smoothing = 0.0
  c.generator_objective = "adversarial"  # or "feature_matching" (D's last conv features)
  c.d_minibatch = "none"  # none | stddev | discrimination
  c.g_historical_weight = 0.0
  c.d_historical_weight = 0.0
  if arg == "cpu":
    c.ngf = 32
    c.ndf = 32
    c.num_steps = 2_000
    c.eval_every = 1_000
  elif arg == "pacgan":  # docs/results.md, "What PacGAN's released Stacked MNIST code does"
    c.image_size = 28
    c.architecture = "dcgan_tf"
    c.real_range = "unit"
    c.digit_source = "train+test"
    c.real_order = "epochs"
    c.generator_per_slot = True
    c.g_steps = 2
    c.latent_distribution = "uniform"
    c.num_steps = 100_000  # 50 epochs of 128,000 packs at batch 64
    c.eval_every = 2_000  # every epoch
  elif arg == "smoke":
    c.num_train = 512
    c.batch_size = 16
    c.num_steps = 4
    c.eval_every = 2
    c.eval_samples = 300
    c.latent_dim = 16
    c.ngf = 8
    c.ndf = 8
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use stacked_mnist.py, stacked_mnist.py:cpu, "
                     "stacked_mnist.py:pacgan or stacked_mnist.py:smoke")
  return c
