"""G's and D's optimizers (Adam, RMSProp) and learning-rate schedules, read from every
program's config."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgan import mixture_benchmark, optimizers, trainer
from jaxgan.checkpointing import ResumableRun
from jaxgan.errors import ConfigError
from jaxgan.train import optimizers_from_config, train_step

from helpers import assert_run_saved_before_the_key_resumes_only_as


def test_schedules_start_at_the_peak_and_reach_zero_at_the_end():
  assert optimizers.learning_rate(2e-4, "constant", 10) == 2e-4
  for schedule in ("linear", "cosine"):
    lr = optimizers.learning_rate(2.0, schedule, 10)
    np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(20)], [2.0, 1.0, 0.0, 0.0], atol=1e-6)
  lr = optimizers.learning_rate(2.0, "cosine", 10)
  np.testing.assert_allclose(lr(2), 1.0 + np.cos(np.pi * 0.2), rtol=1e-6)  # a half cosine
  with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
    optimizers.learning_rate(2.0, "step", 10)


def _update_sizes(tx, count):
  """|update| of each of `count` Adam updates for a constant gradient: the learning rate."""
  params = {"w": jnp.zeros(3)}
  state, sizes = tx.init(params), []
  for _ in range(count):
    updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    sizes.append(float(jnp.abs(updates["w"][0])))
  return np.array(sizes)


def test_each_network_decays_over_its_own_updates_per_step():
  """10 steps with n_critic=2: G makes 10 updates and D 20, and both end at 0; with g_steps=3,
  G makes 30. The CelebA program passes its g_steps to G's schedule."""
  g, d = optimizers.optimizer_pair(1.0, 0.5, 0.5, 0.999, schedule="linear", num_steps=10, n_critic=2)
  np.testing.assert_allclose(_update_sizes(g, 10), 1.0 - np.arange(10) / 10, atol=1e-5)
  np.testing.assert_allclose(_update_sizes(d, 20), 0.5 * (1.0 - np.arange(20) / 20), atol=1e-5)
  g, d = optimizers.optimizer_pair(1.0, 0.5, 0.5, 0.999, schedule="linear", num_steps=10, g_steps=3)
  np.testing.assert_allclose(_update_sizes(g, 30), 1.0 - np.arange(30) / 30, atol=1e-5)
  np.testing.assert_allclose(_update_sizes(d, 10), 0.5 * (1.0 - np.arange(10) / 10), atol=1e-5)
  from experiments.configs import celeba
  c = celeba.get_config("smoke")
  c.optimizer.lr_schedule, c.num_steps, c.g_steps = "linear", 10, 2
  g = trainer.create_state_from_config(c, jax.random.key(0)).g_optimizer
  np.testing.assert_allclose(_update_sizes(g, 20), c.optimizer.g_lr * (1.0 - np.arange(20) / 20),
                             rtol=1e-4, atol=1e-9)
  constant = optimizers_from_config({"g_lr": 1.0, "d_lr": 0.5, "b1": 0.5, "b2": 0.999,
                                     "num_steps": 10})  # no lr_schedule key: constant
  np.testing.assert_allclose(_update_sizes(constant["d_optimizer"], 5), 0.5, atol=1e-5)
  with pytest.raises(ValueError, match="give num_steps >= 1"):
    optimizers.optimizer_pair(1.0, 1.0, 0.5, 0.999, schedule="cosine")


def test_rmsprop_is_pytorchs_and_every_program_can_choose_it():
  """RMSProp as torch.optim.RMSprop(lr, alpha) computes it, written out in numpy: the original
  WGAN's optimizer (with weight clipping), selectable in the CelebA, toy and Stacked MNIST configs."""
  grads = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32) * [1, 1e-3, 10, 1e-6]
  lr, alpha = 5e-5, 0.99
  p, v, expected = np.zeros(4), np.zeros(4), []
  for g in grads:
    v = alpha * v + (1 - alpha) * g * g
    p = p - lr * g / (np.sqrt(v) + 1e-8)
    expected.append(p.copy())
  tx = optimizers.optimizer("rmsprop", lr, rms_decay=alpha)
  params = jnp.zeros(4)
  state, got = tx.init(params), []
  for g in grads:
    updates, state = tx.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
    got.append(np.asarray(params))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)

  from experiments.configs import celeba, stacked_mnist, toy
  for config in (toy.get_config("smoke"), stacked_mnist.get_config("smoke")):
    assert config.optimizer == "adam"
    config.optimizer = "rmsprop"
    tx = optimizers_from_config(config)["d_optimizer"]
    assert optax.tree_utils.tree_get(tx.init(jnp.zeros(2)), "nu") is not None  # RMSProp's state
    assert optax.tree_utils.tree_get(tx.init(jnp.zeros(2)), "mu") is None  # no Adam momentum
  c = celeba.get_config("smoke")
  c.optimizer.name = "rmsprop"
  trainer.validate_config(c)
  c.optimizer.name = "sgd"
  with pytest.raises(ConfigError, match=r"config.optimizer.name='sgd' is unknown; choose one of "
                                        r"adam, rmsprop"):
    trainer.validate_config(c)
  c.optimizer.name, c.optimizer.rms_decay = "rmsprop", 1.0
  with pytest.raises(ConfigError, match=r"config.optimizer.rms_decay must be in \[0, 1\), got 1.0"):
    trainer.validate_config(c)
  c = toy.get_config("smoke")
  c.optimizer = "adagrad"
  with pytest.raises(ConfigError, match="config.optimizer='adagrad' is unknown"):
    mixture_benchmark.validate_config(c)


def test_a_run_resumes_only_with_its_own_optimizer(tmp_path):
  """The checkpoint holds that optimizer's state; runs saved before the key ran Adam."""
  from experiments.configs import celeba, toy
  c = celeba.get_config("smoke")
  saved = c.to_dict()
  c.optimizer.name = "rmsprop"
  with pytest.raises(ConfigError, match="config.optimizer.name='adam', not 'rmsprop'; resume "
                                        "with the same settings or use a new --workdir"):
    trainer._check_compatible(saved, c, pathlib.Path("w"))
  del saved["optimizer"]["name"]  # a run saved before the key: Adam
  with pytest.raises(ConfigError, match="config.optimizer.name='adam', not 'rmsprop'"):
    trainer._check_compatible(saved, c, pathlib.Path("w"))
  c.optimizer.name = "adam"
  trainer._check_compatible(saved, c, pathlib.Path("w"))

  c = toy.get_config("smoke")
  saved = json.loads(c.to_json_best_effort())
  del saved["optimizer"], saved["rms_decay"]
  with ResumableRun(tmp_path, c, added_keys=mixture_benchmark.ADDED_KEYS) as run:
    run._check_config(saved)
    c.optimizer = "rmsprop"
    run.config = json.loads(c.to_json_best_effort())
    with pytest.raises(ConfigError, match="config.optimizer='adam', not 'rmsprop'; resume"):
      run._check_config(saved)


def test_toy_program_decays_and_refuses_to_stretch_a_decay_on_resume(tmp_path):
  """A decaying run cannot be trained further with a larger num_steps (its learning rate
  already reached 0 on the old curve); a constant-rate run can (see test_mixtures)."""
  from experiments.configs import toy
  c = toy.get_config("smoke")
  c.num_seeds, c.num_steps, c.eval_every, c.lr_schedule = 1, 20, 20, "linear"
  result = mixture_benchmark.run(c, tmp_path / "run")
  assert result["num_seeds"] == 1 and np.isfinite(result["reverse_kl"])
  c.num_steps = 40
  with pytest.raises(ConfigError, match="config.num_steps=20, not 40; resume with the same"):
    mixture_benchmark.run(c, tmp_path / "run")
  c.lr_schedule = "exponential"
  with pytest.raises(ConfigError, match="config.lr_schedule='exponential' is unknown; choose one "
                                        "of constant, linear, cosine"):
    mixture_benchmark.validate_config(c)


def test_runs_saved_before_the_key_existed_resume_at_a_constant_rate(tmp_path):
  from experiments.configs import toy
  c = toy.get_config("smoke")
  c.lr_schedule = "linear"
  assert_run_saved_before_the_key_resumes_only_as(tmp_path, c, "lr_schedule", "constant")


def test_celeba_config_checks_the_schedule_and_its_resume():
  from experiments.configs import celeba
  c = celeba.get_config("smoke")
  c.optimizer.lr_schedule = "cosine"
  trainer.validate_config(c)
  saved = c.to_dict()
  c.num_steps = 2 * c.num_steps
  with pytest.raises(ConfigError, match="lr_schedule='cosine' over config.num_steps=6, not "
                                        "'cosine' over 12; a decaying learning rate"):
    trainer._check_compatible(saved, c, pathlib.Path("w"))
  c.optimizer.lr_schedule = "constant"  # a constant rate may train further...
  saved["optimizer"]["lr_schedule"] = "constant"
  trainer._check_compatible(saved, c, pathlib.Path("w"))
  del saved["optimizer"]["lr_schedule"]  # ...also from a run saved before the key existed
  trainer._check_compatible(saved, c, pathlib.Path("w"))
  c.optimizer.lr_schedule = "linear"
  with pytest.raises(ConfigError, match="lr_schedule='constant' over"):
    trainer._check_compatible(saved, c, pathlib.Path("w"))
  c.num_steps = 0
  with pytest.raises(ConfigError, match="decays over the run; set config.num_steps >= 1"):
    trainer.validate_config(c)
  c.optimizer.lr_schedule = "step"
  with pytest.raises(ConfigError, match="config.optimizer.lr_schedule='step' is unknown"):
    trainer.validate_config(c)
  c = celeba.get_config("smoke")
  c.optimizer.lr_schedule, c.n_critic = "linear", 2
  trainer.validate_config(c)
  state = trainer.create_state_from_config(c, jax.random.key(0))
  counts = optax.tree_utils.tree_get_all_with_path(state.d_opt_state, "count")
  assert len(counts) == 2  # Adam's count and the schedule's: the state carries the position
  c.optimizer.lr_schedule = "constant"
  plain = trainer.create_state_from_config(c, jax.random.key(0))
  assert len(optax.tree_utils.tree_get_all_with_path(plain.d_opt_state, "count")) == 1


def test_celeba_wgan_preset_is_the_original_wgan_and_trains():
  """`celeba.py:wgan`: Wasserstein loss, clipping at 0.01, 5 critic updates of 64 images
  per G update, RMSProp 5e-5; with `smoke` it trains and keeps D's weights clipped."""
  from experiments.configs import celeba
  c = celeba.get_config("wgan")
  assert (c.loss, c.weight_clip, c.n_critic, c.batch_size) == ("wasserstein", 0.01, 5, 320)
  assert (c.optimizer.name, c.optimizer.g_lr, c.optimizer.d_lr) == ("rmsprop", 5e-5, 5e-5)
  assert celeba.get_config("smoke,wgan") == celeba.get_config("wgan,smoke")
  with pytest.raises(ValueError, match="unknown config variant 'wgan-gp'; use celeba.py, "):
    celeba.get_config("smoke,wgan-gp")

  c = celeba.get_config("smoke,wgan")
  trainer.validate_config(c)
  state = trainer.create_state_from_config(c, jax.random.key(0))
  assert optax.tree_utils.tree_get(state.d_opt_state, "nu") is not None  # RMSProp's state
  assert optax.tree_utils.tree_get(state.d_opt_state, "mu") is None  # no Adam momentum
  images = jax.random.uniform(jax.random.key(1), (c.batch_size, 32, 32, 3), minval=-1, maxval=1)
  step = jax.jit(train_step)
  for i in range(2):
    state, metrics = step(state, {"image": images}, jax.random.key(2 + i))
  assert np.isfinite(float(metrics["d_loss"])) and int(state.step) == 2
  d_leaves = jax.tree.leaves(state.d_params)
  assert max(float(jnp.abs(leaf).max()) for leaf in d_leaves) <= 0.01 + 1e-7
