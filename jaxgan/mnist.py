"""MNIST: the IDX file reader, and the digit classifier that labels Stacked-MNIST samples.

`load(data_dir, split)` reads the original IDX files (`train-images-idx3-ubyte[.gz]`,
...) from `data_dir`, or tfds's `mnist` through `tfds.data_source` when
`data_dir` is empty. `train_classifier` fits `DigitClassifier` (a small CNN,
>= 99% test accuracy in 4 epochs) with optax; `save_classifier` /
`load_classifier` keep it as an orbax checkpoint plus a JSON of its metrics,
to which loading adds `params_digest`: it names the weights, so that scores from two
classifiers are never mixed unknowingly.
"""

from __future__ import annotations

import gzip
import json
import logging
import pathlib
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxgan.checkpointing import tree_digest
from jaxgan.errors import DataError, first_line

log = logging.getLogger(__name__)

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | pathlib.Path) -> np.ndarray:
  """An IDX file (optionally gzipped) as an array of its dtype and shape."""
  path = pathlib.Path(path)
  data = path.read_bytes()
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
    raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}); "
                    "use the original MNIST files")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  dtype = np.dtype(_IDX_TYPES[data[2]])
  body = data[4 + 4 * ndim:]
  if len(body) != int(np.prod(shape)) * dtype.itemsize:
    raise DataError(f"{path} is truncated or corrupt: header says {shape} of {dtype}, "
                    f"but {len(body)} bytes follow; download it again")
  return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(data_dir: pathlib.Path, name: str) -> pathlib.Path:
  for candidate in (data_dir / name, data_dir / f"{name}.gz"):
    if candidate.exists():
      return candidate
  raise DataError(f"{data_dir} has no {name}[.gz]; point data_dir at the folder with the original "
                  "MNIST IDX files, or set it to '' to read tfds 'mnist'")


def load(data_dir: str | pathlib.Path | None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28], labels int32 [N]) of MNIST's `split` ("train" or "test")."""
  if split not in FILES:
    raise DataError(f"unknown MNIST split {split!r}; choose train or test")
  if not data_dir:
    return _load_tfds(split)
  data_dir = pathlib.Path(data_dir).expanduser()
  if not data_dir.is_dir():
    raise DataError(f"MNIST folder {data_dir} does not exist; point data_dir at the folder with "
                    "the original IDX files (e.g. ../shared/data/mnist)")
  images, labels = (read_idx(_find(data_dir, name)) for name in FILES[split])
  if images.ndim != 3 or labels.shape != images.shape[:1]:
    raise DataError(f"MNIST {split} files in {data_dir} disagree: images {images.shape}, "
                    f"labels {labels.shape}")
  return images.astype(np.uint8), labels.astype(np.int32)


def _load_tfds(split: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    source = tfds.data_source("mnist", split=split, download=False)  # never a network call
    examples = [source[i] for i in range(len(source))]
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"cannot read tfds 'mnist' ({first_line(e)}); prepare it with tfds, or set "
                    "data_dir to a folder with the original IDX files") from None
  images = np.stack([np.asarray(ex["image"]).reshape(28, 28) for ex in examples])
  return images.astype(np.uint8), np.asarray([ex["label"] for ex in examples], np.int32)


def to_model_input(images: np.ndarray | jax.Array) -> jax.Array:
  """uint8 [N, 28, 28] -> float32 [N, 28, 28, 1] in [-1, 1], the range GAN samples have."""
  return (jnp.asarray(images, jnp.float32) / 127.5 - 1.0)[..., None]


class DigitClassifier(nn.Module):
  """[B, 28, 28, 1] in [-1, 1] -> 10 logits: conv5x5(32)-pool-conv5x5(64)-pool-dense256-dropout.
  (3x3 convolutions and a 128-wide layer stopped at 98.96%.)"""

  @nn.compact
  def __call__(self, x, train: bool = False):
    for features in (32, 64):
      x = nn.relu(nn.Conv(features, (5, 5))(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(256)(x.reshape(x.shape[0], -1)))
    x = nn.Dropout(0.4, deterministic=not train)(x)
    return nn.Dense(10)(x)


def predict(params: Any, images: jax.Array, batch_size: int = 1000) -> np.ndarray:
  """Predicted digits of float images [N, 28, 28, 1] in [-1, 1]."""
  n = images.shape[0]
  out = []
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - chunk.shape[0]  # one compiled shape for every chunk
    chunk = jnp.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0))) if pad else chunk
    out.append(np.asarray(_predict_batch(params, chunk))[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0,), np.int32)


@jax.jit
def _predict_batch(params, x):
  return jnp.argmax(DigitClassifier().apply({"params": params}, x), axis=-1)


def train_classifier(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                     epochs: int = 3, batch_size: int = 128, learning_rate: float = 1e-3,
                     seed: int = 0, log_every: int = 100,
                     on_epoch: Callable[[int, float], None] | None = None) -> tuple[Any, dict]:
  """Fits `DigitClassifier` with Adam (cosine-decayed rate) and cross-entropy; returns
  (params, metrics).

  `train` and `test` are (uint8 images [N, 28, 28], int labels [N]). Each epoch
  visits the training set in a fresh random order (batches of `batch_size`;
  the last partial batch is dropped). Metrics: test accuracy after each epoch.
  """
  images, labels = train
  if len(images) < batch_size:
    raise DataError(f"{len(images)} training images are fewer than batch_size={batch_size}")
  key = jax.random.key(seed)
  model = DigitClassifier()
  params = jax.jit(lambda k: model.init(k, jnp.zeros((1, 28, 28, 1))))(key)["params"]
  steps_per_epoch = len(images) // batch_size
  # Cosine decay to 0 over the run: ~0.4 points of test accuracy over a constant rate.
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, max(epochs * steps_per_epoch, 1)))
  opt_state = tx.init(params)
  x_all, y_all = to_model_input(images), jnp.asarray(labels, jnp.int32)
  x_test = to_model_input(test[0])

  @jax.jit  # the data are arguments, not closed-over constants compiled into the program
  def step(params, opt_state, x_all, y_all, idx, dropout_key):
    def loss_fn(p):
      logits = model.apply({"params": p}, x_all[idx], train=True, rngs={"dropout": dropout_key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_all[idx]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  history, t0 = [], time.perf_counter()
  for epoch in range(epochs):
    order = jax.random.permutation(jax.random.fold_in(key, epoch), len(images))
    for i in range(steps_per_epoch):
      idx = order[i * batch_size:(i + 1) * batch_size]
      params, opt_state, loss = step(params, opt_state, x_all, y_all, idx,
                                     jax.random.fold_in(key, epoch * steps_per_epoch + i + 1))
      if log_every and i % log_every == 0:
        log.info("epoch %d step %d/%d loss %.4f", epoch + 1, i, steps_per_epoch, float(loss))
    accuracy = float(np.mean(predict(params, x_test) == np.asarray(test[1])))
    history.append(accuracy)
    log.info("epoch %d/%d: test accuracy %.4f (%.0fs)", epoch + 1, epochs, accuracy,
             time.perf_counter() - t0)
    if on_epoch:
      on_epoch(epoch + 1, accuracy)
  return params, {"test_accuracy": history[-1] if history else None,
                  "test_accuracy_per_epoch": history, "num_train": int(len(images)),
                  "num_test": int(len(test[0])), "epochs": epochs, "batch_size": batch_size,
                  "learning_rate": learning_rate, "seed": seed,
                  "seconds": round(time.perf_counter() - t0, 1)}


def save_classifier(directory: str | pathlib.Path, params: Any, metrics: dict) -> pathlib.Path:
  """Writes `directory/params` (orbax) and `directory/metrics.json`; returns the directory."""
  directory = pathlib.Path(directory).expanduser().absolute()
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "params", params, force=True)
  metrics = {k: v for k, v in metrics.items() if k != "params_digest"}  # loading computes it
  (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
  return directory


def load_classifier(directory: str | pathlib.Path) -> tuple[Any, dict]:
  """(params, metrics) saved by `save_classifier`; metrics gains `params_digest`."""
  directory = pathlib.Path(directory).expanduser().absolute()
  if not (directory / "params").exists() or not (directory / "metrics.json").exists():
    raise DataError(f"no MNIST classifier in {directory}; train one with "
                    f"`python -m experiments.mnist_classifier --workdir={directory}`")
  target = jax.eval_shape(lambda: DigitClassifier().init(jax.random.key(0),
                                                         jnp.zeros((1, 28, 28, 1))))["params"]
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(directory / "params", target)
  metrics = json.loads((directory / "metrics.json").read_text())
  return params, {**metrics, "params_digest": tree_digest(params)[:16]}
