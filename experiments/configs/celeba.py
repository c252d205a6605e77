"""DCGAN on CelebA 64x64 (Radford et al. 2016, as in pytorch/examples' dcgan).

    python -m experiments.celeba --workdir=DIR --config=experiments/configs/celeba.py[:VARIANTS]

VARIANTS is one or more of these, joined by commas (`:smoke,wgan`):
  smoke  tiny (32x32, widths 8, 6 steps) on synthetic images: it runs offline on a
         fresh machine in well under a minute.
  wgan   the original WGAN (Arjovsky et al. 2017) on the DCGAN: Wasserstein loss, D's
         weights clipped to [-0.01, 0.01], 5 critic updates per G update on batches of
         64 (16 with smoke) each, RMSProp at 5e-5 for both networks.
"""

import ml_collections

from jaxgan import evaluation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128  # global, over all processes and devices
  c.num_steps = 20_000
  c.loss = "non_saturating"
  c.n_critic = 1
  c.g_steps = 1  # G updates per step on the same latents (DCGAN-tensorflow runs 2)
  c.latent_dim = 100
  c.latent_distribution = "normal"  # z ~ N(0, I); "uniform": U(-1, 1), as Radford et al.
  c.ema_decay = 0.0  # 0 disables the EMA of G; e.g. 0.999 enables it
  c.ema_start = 0  # the EMA copies G until this step, then averages
  # G's update reuses the last D update's z and its forward pass of G (as pytorch/examples'
  # DCGAN); false draws fresh z for G's update and runs G once more.
  c.reuse_fake = True

  # Remedies for mode collapse and instability (all off by default = the DCGAN baseline).
  c.gp_weight = 0.0  # WGAN-GP gradient penalty weight (e.g. 10 with loss=wasserstein)
  c.r1_gamma = 0.0  # R1 penalty gamma (e.g. 0.2-10)
  c.r1_interval = 1  # lazy R1: every N steps, weighted by N (StyleGAN2 uses 16)
  c.weight_clip = 0.0  # clip D's weights to [-c, c] (original WGAN: 0.01)
  c.augment = ""  # DiffAugment transforms for D, e.g. "color,translation,cutout"
  c.pack = 1  # PacGAN: D judges packs of this many samples

  # "Improved Techniques for Training GANs" (Salimans et al. 2016), all off by default.
  c.label_smoothing = 0.0  # one-sided: D's real target 1 - this (e.g. 0.1)
  c.generator_objective = "adversarial"  # or "feature_matching" (on D's last feature map)
  c.g_historical_weight = 0.0  # historical averaging: + w ||theta - mean past theta||^2
  c.d_historical_weight = 0.0

  c.model = ml_collections.ConfigDict()
  c.model.name = "dcgan"  # dcgan | sn_resnet (32 or 64 px; ngf/ndf are its widths `ch`)
  c.model.image_size = 64
  c.model.channels = 3
  c.model.ngf = 64
  c.model.ndf = 64
  # How G's transposed convolutions run: auto (phase on CPU and for float32 on GPU, else
  # transpose) | phase | subpixel | transpose; all have the same parameters and outputs.
  c.model.upsample = "auto"
  c.model.conv_impl = "auto"  # auto (tap_matmul on CPU, xla elsewhere) | xla | tap_matmul
  c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params/optimizer stay float32)
  c.model.spectral_norm = False  # SN-DCGAN discriminator: spectral norm instead of BatchNorm
  c.model.minibatch = "none"  # D: none | stddev (ProGAN) | discrimination (Salimans et al.)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"  # adam | rmsprop (the original WGAN's; uses rms_decay, not b1/b2)
  c.optimizer.g_lr = 2e-4
  c.optimizer.d_lr = 2e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.optimizer.rms_decay = 0.99  # rmsprop only: PyTorch's RMSprop alpha
  c.optimizer.lr_schedule = "constant"  # constant | linear | cosine: decay to 0 at num_steps

  c.data = ml_collections.ConfigDict()
  c.data.source = "tfds"  # tfds | folder | npz | synthetic
  c.data.name = "celeb_a"  # tfds dataset name
  c.data.split = "train"
  c.data.path = ""  # folder/zip (folder source) or .npz file (npz source)
  c.data.data_dir = ""  # tfds data_dir ("" = tfds default)
  c.data.manual_dir = ""  # tfds manual_dir (CelebA's manual download route)
  c.data.download = True  # tfds: download and prepare when not prepared yet
  c.data.crop = "center140"  # center140 (CelebA-64 protocol) | none
  c.data.num_examples = 1024  # synthetic source only
  c.data.num_workers = 4  # decoding threads
  c.data.prefetch = 2  # batches prepared ahead
  c.data.cache_dir = ""  # one-time decoded-image cache (.npy, memory-mapped); "" = off
  c.data.max_bad_fraction = 0.01  # stop when more unreadable images than this

  c.nonfinite = "stop"  # stop | skip: on a NaN/inf loss, gradient or parameter
  c.parallel = "jit"  # jit (mesh over all devices) | pmap | none (one device)
  c.multihost = "auto"  # auto | on | off: call jax.distributed.initialize() (TPU pods: on)
  c.compilation_cache_dir = ""  # persistent XLA compilation cache for repeated runs; "" = off

  c.log_every = 100
  c.sample_every = 1000
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3

  # Evaluation: every `eval_every` steps (0 = never) write eval/<step>.json with FID, KID, IS,
  # precision/recall, log them to TensorBoard and keep the best checkpoint (by FID) in best/.
  # Keys of `eval`: see jaxgan.evaluation.default_config (features, weights, num_samples, ...).
  c.eval_every = 0
  c.eval = evaluation.default_config()

  variants = [v for v in (arg or "").split(",") if v]
  unknown = sorted(set(variants) - {"smoke", "wgan"})
  if unknown:
    raise ValueError(f"unknown config variant {unknown[0]!r}; use celeba.py, celeba.py:smoke, "
                     "celeba.py:wgan or celeba.py:smoke,wgan")
  if "smoke" in variants:
    c.batch_size = 16
    c.num_steps = 6
    c.model.image_size = 32
    c.model.ngf = 8
    c.model.ndf = 8
    c.latent_dim = 16
    c.data.source = "synthetic"
    c.data.crop = "none"
    c.data.num_examples = 64
    c.log_every = 2
    c.sample_every = 3
    c.checkpoint_every = 3
    c.keep_checkpoints = 2
  if "wgan" in variants:
    c.loss = "wasserstein"
    c.weight_clip = 0.01
    c.n_critic = 5
    c.batch_size = c.n_critic * (16 if "smoke" in variants else 64)  # split over the updates
    if "smoke" in variants:
      c.data.num_examples *= c.n_critic  # as many batches as without wgan
    c.optimizer.name = "rmsprop"
    c.optimizer.g_lr = c.optimizer.d_lr = 5e-5
  return c
