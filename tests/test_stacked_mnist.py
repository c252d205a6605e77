"""MNIST reading, the digit classifier (orbax round trip), Stacked-MNIST stacking and mode
counting, and both entry points end to end on generated IDX files."""

import gzip
import json
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import mnist, stacked_mnist
from jaxgan.checkpointing import tree_digest
from jaxgan.errors import ConfigError, DataError

from test_celeba_program import run_cli


def write_idx(path, array, compress=False):
  """The IDX format: 0, 0, type 0x08 (ubyte), ndim, big-endian dims, then the data."""
  array = np.asarray(array, np.uint8)
  data = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  data += array.tobytes()
  path.write_bytes(gzip.compress(data) if compress else data)


def fake_mnist(directory, num_train=600, num_test=200, seed=0):
  """IDX files of random 28x28 images and labels, named as MNIST's (train gzipped, test plain)."""
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  for split, n, gz in (("train", num_train, True), ("test", num_test, False)):
    images_name, labels_name = mnist.FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(directory / (images_name + suffix), rng.integers(0, 256, (n, 28, 28)), gz)
    write_idx(directory / (labels_name + suffix), rng.integers(0, 10, (n,)), gz)
  return directory


def test_idx_files_plain_gzipped_and_broken(tmp_path):
  d = fake_mnist(tmp_path / "mnist")
  images, labels = mnist.load(d, "train")
  assert images.shape == (600, 28, 28) and images.dtype == np.uint8 and labels.shape == (600,)
  test_images, _ = mnist.load(d, "test")
  assert test_images.shape == (200, 28, 28)
  raw = gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes())
  np.testing.assert_array_equal(np.frombuffer(raw[16:], np.uint8).reshape(600, 28, 28), images)
  (tmp_path / "bad").write_bytes(b"\x89PNG....")
  with pytest.raises(DataError, match="is not an IDX file"):
    mnist.read_idx(tmp_path / "bad")
  (tmp_path / "short").write_bytes(raw[:1000])
  with pytest.raises(DataError, match="truncated or corrupt"):
    mnist.read_idx(tmp_path / "short")
  with pytest.raises(DataError, match="does not exist"):
    mnist.load(tmp_path / "nowhere")
  (d / "t10k-labels-idx1-ubyte").unlink()
  with pytest.raises(DataError, match=r"has no t10k-labels-idx1-ubyte\[.gz\]"):
    mnist.load(d, "test")


def test_tfds_mnist_read_and_not_prepared_is_one_clear_line(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5):
    images, labels = mnist.load("", "test")
  assert images.shape == (5, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (5,) and labels.dtype == np.int32 and labels.max() < 10
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # no MNIST prepared there: nothing downloads
  with pytest.raises(DataError, match=r"cannot read tfds 'mnist' \(KeyError: .*set data_dir") as e:
    mnist.load("", "train")
  assert "\n" not in str(e.value)


def test_stacking_and_mode_metrics():
  digits = stacked_mnist.padded_digits(np.arange(4 * 28 * 28).reshape(4, 28, 28) % 256)
  assert digits.shape == (4, 32, 32) and float(digits[0, 0, 0]) == -1.0  # padded background
  stacked = stacked_mnist.stack(digits, jnp.array([[2, 0, 3], [1, 1, 1]]))
  assert stacked.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(stacked[0, :, :, 2], digits[3])
  np.testing.assert_array_equal(stacked[1, :, :, 0], digits[1])
  scores = stacked_mnist.mode_metrics(np.array([[1, 2, 3], [1, 2, 3], [0, 0, 0], [9, 9, 9]]))
  assert scores["modes"] == 3
  assert scores["kl"] == pytest.approx(0.5 * np.log(500) + 2 * 0.25 * np.log(250))
  uniform = np.array([[i // 100, i // 10 % 10, i % 10] for i in range(1000)])
  assert stacked_mnist.mode_metrics(uniform) == {"modes": 1000, "kl": pytest.approx(0.0, abs=1e-12)}


def test_classifier_on_real_mnist_reads_stacked_channels(shared_data, tmp_path):
  train = mnist.load(shared_data / "mnist", "train")
  test = mnist.load(shared_data / "mnist", "test")
  assert train[0].shape == (60000, 28, 28) and test[0].shape == (10000, 28, 28)
  params, metrics = mnist.train_classifier((train[0][:6000], train[1][:6000]),
                                           (test[0][:2000], test[1][:2000]), epochs=2)
  assert metrics["test_accuracy"] > 0.9  # 6k images, two epochs; the full run reaches >= 99%
  mnist.save_classifier(tmp_path / "clf", params, metrics)
  restored, restored_metrics = mnist.load_classifier(tmp_path / "clf")
  # Loading names the weights: the same digest for the saved and the restored tree.
  assert restored_metrics == {**metrics, "params_digest": tree_digest(params)[:16]}
  x = mnist.to_model_input(test[0][:500])
  np.testing.assert_array_equal(mnist.predict(restored, x), mnist.predict(params, x))
  # Stacked images of test digits: each channel's label is that digit's label.
  index = stacked_mnist.random_index(jax.random.key(0), 400, 2000)
  images = stacked_mnist.stack(stacked_mnist.padded_digits(test[0][:2000]), index)
  read = stacked_mnist.label_channels(params, images, batch_size=256)
  assert np.mean(read == test[1][np.asarray(index)]) > 0.9
  with pytest.raises(DataError, match="no MNIST classifier in .*python -m experiments.mnist_classifier"):
    mnist.load_classifier(tmp_path / "none")


def test_classifier_and_stacked_mnist_programs_end_to_end(tmp_path):
  data = fake_mnist(tmp_path / "mnist")
  clf = tmp_path / "clf"
  r = run_cli("experiments.mnist_classifier", f"--workdir={clf}",
              "--config=experiments/configs/mnist_classifier.py:smoke",
              f"--config.data_dir={data}", "--config.num_train=0")
  assert r.returncode == 0, r.stderr[-2000:]
  assert (clf / "params").is_dir() and json.loads((clf / "metrics.json").read_text())["epochs"] == 1
  r = run_cli("experiments.mnist_classifier", f"--workdir={tmp_path / 'clf2'}",
              f"--config.data_dir={data}", "--config.epochs=1")  # random labels: far below 99%
  assert r.returncode == 2 and "below config.min_accuracy=0.99" in r.stderr
  assert not (tmp_path / "clf2" / "params").exists()
  work = tmp_path / "stacked"
  flags = [f"--workdir={work}", "--config=experiments/configs/stacked_mnist.py:smoke",
           f"--config.data_dir={data}"]
  r = run_cli("experiments.stacked_mnist", *flags)
  assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
  assert "config.classifier_dir is empty" in r.stderr
  r = run_cli("experiments.stacked_mnist", *flags, f"--config.classifier_dir={clf}",
              "--config.d_minibatch=minibatch")
  assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
  assert "minibatch" in r.stderr and "stddev" in r.stderr
  # PacDCGAN2 with the Improved Techniques switched on through the config.
  flags.append(f"--config.classifier_dir={clf}")
  improved = ["--config.pack=2", "--config.label_smoothing=0.1", "--config.d_minibatch=stddev",
              "--config.generator_objective=feature_matching", "--config.d_historical_weight=0.01"]
  r = run_cli("experiments.stacked_mnist", *flags, *improved)
  assert r.returncode == 0, r.stderr[-2000:]
  results = json.loads((work / "results.json").read_text())
  assert 1 <= results["modes"] <= 300 and results["kl"] >= 0 and results["num_seeds"] == 1
  assert "(1 seed; real data: " in r.stdout, r.stdout
  assert set(results["real_data"]) == {"modes", "kl"}
  assert [json.loads(l)["step"] for l in (work / "metrics.jsonl").read_text().splitlines()] == [2, 4]
  assert (work / "samples_seed0.png").stat().st_size > 0
  # --rescore: the newest checkpoint scored again by a classifier; by its own, the same numbers.
  r = run_cli("experiments.stacked_mnist", f"--workdir={work}", f"--rescore={clf}")
  assert r.returncode == 0, r.stderr[-2000:]
  own = results["per_seed"][0]
  assert f"seed 0 step 4: {own['modes']}/1000 modes, KL {own['kl']:.3f}" in r.stdout, r.stdout
  rescored = stacked_mnist.rescore(work, clf)
  assert (rescored["modes"], rescored["kl"], rescored["real_data"]) == (
      own["modes"], own["kl"], results["real_data"])
  assert rescored["scored_by_digest"] == rescored["classifier_digest"] == results["classifier_digest"]
  with pytest.raises(ConfigError, match="no checkpoints in .*experiments.stacked_mnist"):
    stacked_mnist.rescore(tmp_path / "clf", clf)
  # Stopped after the evaluation at step 2 (its checkpoint is the newest), the same command
  # goes on from there and ends where the uninterrupted run ended.
  shutil.rmtree(work / "checkpoints" / "4")
  r = run_cli("experiments.stacked_mnist", *flags, *improved)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed at seed 0 step 2" in r.stderr
  assert json.loads((work / "results.json").read_text())["per_seed"] == results["per_seed"]
  assert [json.loads(l)["step"] for l in (work / "metrics.jsonl").read_text().splitlines()] == [2, 4]
  # The scores name their classifier. A classifier retrained in the same directory (here: one
  # weight changed) does not resume the run, so its seeds are never scored by two classifiers.
  params, clf_metrics = mnist.load_classifier(clf)
  assert results["classifier_digest"] == clf_metrics["params_digest"]
  changed = jax.tree.map(lambda x: x, params)
  changed["Dense_0"]["bias"] = changed["Dense_0"]["bias"].at[0].add(1e-3)
  mnist.save_classifier(clf, changed, clf_metrics)
  assert mnist.load_classifier(clf)[1]["params_digest"] != clf_metrics["params_digest"]
  shutil.rmtree(work / "checkpoints" / "4")
  r = run_cli("experiments.stacked_mnist", *flags, *improved)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
  assert "is not the one that scored this run so far" in r.stderr.splitlines()[-1]
  r = run_cli("experiments.stacked_mnist", *flags, *improved[1:])
  assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
  assert "holds a run with config.pack=2, not 1" in r.stderr


def test_config_options_reach_the_stacked_mnist_state():
  """Every training switch of the config (here the Improved Techniques and packing) is
  what create_state receives: one `options_from_config` for all programs."""
  from experiments.configs import stacked_mnist as config_lib
  c = config_lib.get_config("smoke")
  c.pack, c.label_smoothing, c.d_minibatch = 2, 0.1, "stddev"
  c.generator_objective, c.g_historical_weight, c.ema_decay = "feature_matching", 0.01, 0.9
  state = stacked_mnist.make_state(c, jax.random.key(0))
  assert (state.pack, state.label_smoothing, state.generator_objective) == (
      2, 0.1, "feature_matching")
  assert state.discriminator.minibatch == "stddev" and state.ema_decay == 0.9
  assert state.g_historical_params is not None and state.d_historical_params is None
  plain = stacked_mnist.make_state(config_lib.get_config("smoke"), jax.random.key(0))
  assert plain.ema_decay is None and plain.g_historical_params is None


def test_stacked_mnist_trains_a_finished_run_further(tmp_path):
  """A finished run given a larger num_steps goes on from its checkpoint and ends where a
  straight run of that length ends; fewer steps, or more once a later seed has started (the
  earlier seeds' states are not kept), are refused in one line and change nothing."""
  from experiments.configs import stacked_mnist as config_lib
  params = jax.jit(lambda k: mnist.DigitClassifier().init(k, jnp.zeros((1, 28, 28, 1))))(
      jax.random.key(0))["params"]  # untrained: the scores need only be deterministic
  clf = mnist.save_classifier(tmp_path / "clf", params, {"test_accuracy": None})
  c = config_lib.get_config("smoke")
  c.data_dir, c.classifier_dir = str(fake_mnist(tmp_path / "mnist")), str(clf)
  straight = stacked_mnist.run(c, tmp_path / "straight")
  c.num_steps = 2
  short = stacked_mnist.run(c, tmp_path / "further")
  c.num_steps = 4
  further = stacked_mnist.run(c, tmp_path / "further")
  assert further["per_seed"] == straight["per_seed"] != short["per_seed"]
  steps = [json.loads(l)["step"] for l in (tmp_path / "further" / "metrics.jsonl").read_text()
           .splitlines()]
  assert steps == [2, 4] and further["num_steps"] == 4
  c.num_steps = 2
  with pytest.raises(ConfigError, match="holds a run at step 4; config.num_steps=2 must be at "
                                        "least that"):
    stacked_mnist.run(c, tmp_path / "further")
  c.num_seeds = 2
  stacked_mnist.run(c, tmp_path / "two_seeds")
  results = (tmp_path / "two_seeds" / "results.json").read_text()
  c.num_steps = 4
  with pytest.raises(ConfigError, match=r"whose seed 0 was trained to 2 steps \(its state is "
                                        r"not kept\), so config.num_steps=4 cannot"):
    stacked_mnist.run(c, tmp_path / "two_seeds")
  assert (tmp_path / "two_seeds" / "results.json").read_text() == results


def test_pacgan_protocol_options(tmp_path):
  """The `:pacgan` variant's switches: 28-pixel digits in [0, 1] read by the classifier as the
  same digits in [-1, 1], MNIST train + test, packs read in order epoch after epoch, and a run
  of DCGAN-tensorflow's networks with G per pack slot, end to end."""
  from experiments.configs import stacked_mnist as config_lib
  from helpers import assert_run_saved_before_the_key_resumes_only_as
  p = config_lib.get_config("pacgan")
  assert (p.image_size, p.architecture, p.real_range, p.digit_source, p.real_order,
          p.generator_per_slot, p.g_steps, p.latent_distribution, p.num_steps) == (
              28, "dcgan_tf", "unit", "train+test", "epochs", True, 2, "uniform", 100_000)
  raw = np.random.default_rng(0).integers(0, 256, (6, 28, 28))
  unit = stacked_mnist.padded_digits(raw, 28, "unit")
  np.testing.assert_allclose(unit, raw / 255.0, rtol=1e-6)
  assert float(stacked_mnist.padded_digits(raw, 32, "unit")[0, 0, 0]) == 0.0  # the background
  # what the classifier and the sample grids read: the same digits in [-1, 1]
  np.testing.assert_allclose(stacked_mnist.as_signed(unit, "unit"),
                             stacked_mnist.padded_digits(raw, 28), atol=1e-6)
  signed = stacked_mnist.padded_digits(raw, 32)
  index = jnp.array([[0, 1, 2], [3, 4, 5], [5, 0, 3]])
  params = mnist.DigitClassifier().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  np.testing.assert_array_equal(
      stacked_mnist.label_channels(params, stacked_mnist.stack(unit, index), real_range="unit"),
      stacked_mnist.label_channels(params, stacked_mnist.stack(signed, index)))

  data = fake_mnist(tmp_path / "mnist", num_train=300, num_test=100)
  mnist.save_classifier(tmp_path / "clf", params, {"test_accuracy": 0.1})
  c = config_lib.get_config("smoke")
  for key in ("image_size", "architecture", "real_range", "digit_source", "real_order",
              "generator_per_slot", "g_steps", "latent_distribution"):
    c[key] = p[key]
  c.data_dir, c.classifier_dir, c.pack, c.num_train = str(data), str(tmp_path / "clf"), 2, 64
  digits, index = stacked_mnist._training_set(c, jax.random.key(0))
  assert digits.shape == (400, 28, 28) and index.shape == (64, 3)  # 64 training images
  assert int(index.max()) >= 300  # test digits are stacked too
  # 64 packs of 2, drawn once from the 64 training images (as PacGAN's code draws them)
  packs = stacked_mnist._pack_table(c, jax.random.key(0))
  assert packs.shape == (128,) and len(np.unique(packs)) < 128 and int(packs.max()) < 64
  batch = lambda step: stacked_mnist._real_images(c, digits, index, packs, step,  # noqa: E731
                                                  jax.random.key(1))
  np.testing.assert_array_equal(batch(1), stacked_mnist.stack(digits, index[packs[32:64]]))
  np.testing.assert_array_equal(batch(5), batch(1))  # 4 batches per epoch, in order
  random_order = c.copy_and_resolve_references()
  random_order.real_order = "random"
  assert stacked_mnist._pack_table(random_order, jax.random.key(0)) is None
  for key, value, message in (("architecture", "dcgan", "needs a power of two"),
                              ("num_train", 60, "make num_train a multiple"),
                              ("real_order", "shuffled", "choose one of random, epochs"),
                              ("conv_impl", "tap_matmul", "of the 'dcgan' networks only"),
                              ("conv_impl", "fast", "choose one of auto, xla, tap_matmul")):
    bad = c.copy_and_resolve_references()
    bad[key] = value
    with pytest.raises(ConfigError, match=message):
      stacked_mnist.validate_config(bad)
  results = stacked_mnist.run(c, tmp_path / "run")
  assert results["num_steps"] == 4 and 1 <= results["modes"] <= 300
  state = stacked_mnist.make_state(c, jax.random.key(0))
  assert state.generator_per_slot and isinstance(state.generator, stacked_mnist.models.DCGANTFGenerator)
  assert state.data_shape == (28, 28, 3) and state.g_steps == 2
  assert state.generator.conv_impl == state.discriminator.conv_impl == "auto"
  # The convolutions' form changes only the rounding: the run goes on in another one.
  c.conv_impl, c.num_steps = "xla", 6
  assert stacked_mnist.run(c, tmp_path / "run")["num_steps"] == 6
  # A run saved before these keys existed trained with the old behaviour.
  assert_run_saved_before_the_key_resumes_only_as(tmp_path / "old", c, "real_order", "random",
                                                  stacked_mnist.ADDED_KEYS)
