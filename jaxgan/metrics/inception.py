"""The FID Inception-v3 of pytorch-fid, in Flax, and a batched, jitted feature extractor.

`FIDInceptionV3` is the network of pytorch-fid's `InceptionV3(use_fid_inception=True)`:
torchvision's Inception-v3 with the `FIDInceptionA/C/E_1/E_2` blocks of the
2015-12-05 TensorFlow graph (average pools that do not count the padding, a max
pool in the last block). Its submodules carry PyTorch's names, so the weights
file converts key by key. The input handling is pytorch-fid's: uint8 -> [0, 1],
bilinear resize to 299 (align_corners=False, no antialiasing), then [-1, 1].
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.errors import ConfigError

INPUT_SIZE = 299
NUM_LOGITS = 1008  # the 2015-12-05 graph's classifier: 1000 ImageNet classes + 8 unused


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] float32 weights of PyTorch's bilinear interpolation, align_corners=False.

  Row i mixes the two input pixels around src = (i + 0.5) * in/out - 0.5,
  clamped at 0, as `F.interpolate(mode="bilinear", align_corners=False)` does
  (no antialiasing, also when shrinking).
  """
  scale = np.float32(in_size / out_size)
  src = np.maximum(scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5))
                   - np.float32(0.5), np.float32(0))
  x0 = np.minimum(src.astype(np.int64), in_size - 1)
  x1 = np.minimum(x0 + 1, in_size - 1)
  lam1 = (src - x0.astype(np.float32)).astype(np.float32)
  m = np.zeros((out_size, in_size), np.float32)
  np.add.at(m, (np.arange(out_size), x0), np.float32(1) - lam1)
  np.add.at(m, (np.arange(out_size), x1), lam1)
  return m


def prepare_images(images: jax.Array, precision=jax.lax.Precision.HIGHEST) -> jax.Array:
  """uint8 [N, H, W, C] (C = 1 or 3) -> float32 [N, 299, 299, 3] in [-1, 1], as pytorch-fid."""
  x = images.astype(jnp.float32) / 255.0
  if x.shape[-1] == 1:  # pytorch-fid reads every image with PIL's convert("RGB")
    x = jnp.repeat(x, 3, axis=-1)
  h, w = x.shape[1:3]
  if (h, w) != (INPUT_SIZE, INPUT_SIZE):
    x = jnp.einsum("oh,nhwc->nowc", resize_matrix(h, INPUT_SIZE), x, precision=precision)
    x = jnp.einsum("pw,nowc->nopc", resize_matrix(w, INPUT_SIZE), x, precision=precision)
  return 2.0 * x - 1.0


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
  """Conv (no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU: torchvision's BasicConv2d."""
  features: int
  kernel_size: int | Sequence[int]
  stride: int = 1
  padding: int | Sequence[int] = 0
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel_size), strides=_pair(self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_excluding_padding(x):
  # TensorFlow's average pool, patched into pytorch-fid's blocks: padded zeros are not counted.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class FIDInceptionA(nn.Module):
  pool_features: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(64, 1, name="branch1x1")(x)
    b5 = conv(48, 1, name="branch5x5_1")(x)
    b5 = conv(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = conv(64, 1, name="branch3x3dbl_1")(x)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3_excluding_padding(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(384, 3, stride=2, name="branch3x3")(x)
    bd = conv(64, 1, name="branch3x3dbl_1")(x)
    bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = conv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  channels_7x7: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    b1 = conv(192, 1, name="branch1x1")(x)
    b7 = conv(c7, 1, name="branch7x7_1")(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, 1, name="branch7x7dbl_1")(x)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = conv(192, 1, name="branch_pool")(_avg_pool_3x3_excluding_padding(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(192, 1, name="branch3x3_1")(x)
    b3 = conv(320, 3, stride=2, name="branch3x3_2")(b3)
    b7 = conv(192, 1, name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, 3, stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """`max_pool=False`: FIDInceptionE_1 (average pool without padding); True: FIDInceptionE_2."""
  max_pool: bool
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(320, 1, name="branch1x1")(x)
    b3 = conv(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = conv(448, 1, name="branch3x3dbl_1")(x)
    bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    if self.max_pool:  # the 2015 graph's quirk, kept by pytorch-fid
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3_excluding_padding(x)
    bp = conv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """uint8 images [N, H, W, C] -> {"pool3": [N, 2048], "logits": [N, 1008]}."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images):
    p = self.precision
    conv = functools.partial(BasicConv2d, precision=p)
    x = prepare_images(images, p)
    x = conv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = FIDInceptionA(32, p, name="Mixed_5b")(x)
    x = FIDInceptionA(64, p, name="Mixed_5c")(x)
    x = FIDInceptionA(64, p, name="Mixed_5d")(x)
    x = InceptionB(p, name="Mixed_6a")(x)
    x = FIDInceptionC(128, p, name="Mixed_6b")(x)
    x = FIDInceptionC(160, p, name="Mixed_6c")(x)
    x = FIDInceptionC(160, p, name="Mixed_6d")(x)
    x = FIDInceptionC(192, p, name="Mixed_6e")(x)
    x = InceptionD(p, name="Mixed_7a")(x)
    x = FIDInceptionE(False, p, name="Mixed_7b")(x)
    x = FIDInceptionE(True, p, name="Mixed_7c")(x)
    pool3 = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(NUM_LOGITS, precision=p, name="fc")(pool3)
    return {"pool3": pool3, "logits": logits}


def variable_shapes(module: nn.Module | None = None) -> dict:
  """The variables' {"params", "batch_stats"} tree as ShapeDtypeStructs (nothing computed)."""
  module = module or FIDInceptionV3()
  return jax.eval_shape(module.init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.uint8))


def variables_from_state_dict(state_dict: dict[str, np.ndarray], source: str = "the weights",
                              module: nn.Module | None = None) -> dict:
  """pytorch-fid's state dict (numpy arrays) -> this module's Flax variables.

  Conv weights [out, in, kh, kw] become kernels [kh, kw, in, out]; BatchNorm
  weight/bias/running_mean/running_var become scale/bias/mean/var; fc.weight is
  transposed. Any missing, unexpected or misshapen tensor is an error naming it.
  """
  variables: dict = {"params": {}, "batch_stats": {}}
  for key, value in state_dict.items():
    *path, leaf = key.split(".")
    if leaf == "num_batches_tracked":
      continue
    value = np.asarray(value)
    if path and path[-1] == "conv" and leaf == "weight":
      collection, name, value = "params", "kernel", value.transpose(2, 3, 1, 0)
    elif path == ["fc"] and leaf == "weight":
      collection, name, value = "params", "kernel", value.T
    elif leaf in ("weight", "bias"):
      collection, name = "params", "scale" if leaf == "weight" else "bias"
    elif leaf in ("running_mean", "running_var"):
      collection, name = "batch_stats", leaf.removeprefix("running_")[:4]
    else:
      raise ConfigError(f"{source} holds an unexpected tensor {key!r}: not pytorch-fid's "
                        "FID Inception weights (pt_inception-2015-12-05-6726825d.pth)")
    node = variables[collection]
    for part in path:
      node = node.setdefault(part, {})
    node[name] = np.ascontiguousarray(value, np.float32)
  expected = variable_shapes(module)
  want = {jax.tree_util.keystr(p): s.shape for p, s in jax.tree.leaves_with_path(expected)}
  got = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree.leaves_with_path(variables)}
  problems = sorted(f"missing {k}" for k in want.keys() - got.keys())
  problems += sorted(f"unexpected {k}" for k in got.keys() - want.keys())
  problems += sorted(f"{k} has shape {got[k]}, expected {want[k]}"
                     for k in want.keys() & got.keys() if got[k] != want[k])
  if problems:
    raise ConfigError(f"{source} does not fit the FID Inception-v3 ({len(problems)} problem(s), "
                      f"first: {problems[0]}); use pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
  return variables


def save_variables(path: pathlib.Path, variables: dict) -> None:
  """Flax variables -> an .npz of plain arrays (no pickle), written atomically."""
  flat = {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v)
          for p, v in jax.tree.leaves_with_path(variables)}
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, **flat)
  tmp.replace(path)


def load_variables(path: pathlib.Path) -> dict:
  """Reads what `save_variables` wrote (allow_pickle=False: no code can run)."""
  variables: dict = {}
  with np.load(path, allow_pickle=False) as f:
    for key in f.files:
      *parts, leaf = key.split("/")
      node = variables
      for part in parts:
        node = node.setdefault(part, {})
      node[leaf] = f[key]
  return variables
