"""Data-parallel steps over 8 simulated CPU devices (and 2 processes x 4) equal the 1-device step."""

import json
import logging
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxgan
from experiments.configs import celeba
from helpers import image_batches, run_steps, sgd_state, xla_flags_with_devices
from jaxgan import trainer

TESTS = pathlib.Path(__file__).resolve().parent


def assert_close(a, b):
  """Equal within 1e-5 relative to each tensor's scale (element-wise relative error is
  meaningless for entries that are float noise around zero)."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    y = np.asarray(y)
    scale = float(np.max(np.abs(y))) if y.size else 0.0
    np.testing.assert_allclose(np.asarray(x), y, rtol=1e-5, atol=1e-5 * max(scale, 1e-3))


@pytest.mark.parametrize("n_critic", [1, 2])
def test_jit_and_pmap_on_8_devices_equal_one_device(n_critic):
  assert jax.device_count() == 8
  state = sgd_state(n_critic=n_critic, ema_decay=0.5)
  xs, rng = image_batches(3), jax.random.key(7)
  reference = run_steps(jax.jit(jaxgan.train_step), state, xs, rng)
  for kind in ("jit", "pmap"):
    step = jaxgan.parallel.data_parallel_step(kind)
    assert step.num_devices == 8
    new, history = run_steps(step, state, xs, rng)
    # params, BatchNorm statistics, optimizer states, EMA, step; metrics of every step
    assert_close((new, history), reference)
    assert int(new.step) == 3


def test_state_stays_an_ordinary_replicated_gan_state_and_is_donated():
  state = sgd_state()
  step = jaxgan.parallel.data_parallel_step("pmap")
  new, _ = step(state, {"image": image_batches(1)[0]}, jax.random.key(0))
  assert isinstance(new, jaxgan.GANState)
  assert new.step.sharding.is_fully_replicated and len(new.step.sharding.device_set) == 8
  again, _ = jaxgan.parallel.data_parallel_step("jit")(new, {"image": image_batches(1)[0]},
                                                       jax.random.key(0))
  assert new.step.is_deleted()  # donated
  assert int(again.step) == 2
  # A replicated state feeds the ordinary single-device functions too.
  assert jaxgan.sample(again, jax.random.key(1), 3).shape == (3, 16, 16, 3)


@pytest.mark.parametrize("kind", ["jit", "pmap"])
def test_batch_not_divisible_by_devices_is_a_clear_error(kind):
  step = jaxgan.parallel.data_parallel_step(kind)
  with pytest.raises(ValueError, match="global batch of 12 is not divisible by the 8 devices"):
    step(sgd_state(), {"image": image_batches(1, rows=12)[0]}, jax.random.key(0))
  with pytest.raises(ValueError, match="n_critic=2; use a multiple of 16"):
    step(sgd_state(n_critic=2), {"image": image_batches(1, rows=8)[0]}, jax.random.key(0))
  with pytest.raises(ValueError, match="unknown data-parallel kind"):
    jaxgan.parallel.data_parallel_step("ddp")


# Catches a hung jax.distributed rendezvous. The workers take ~40 s on an idle 2-core machine;
# 110 s timed out once beside a full-CPU training run (stop 38), so leave a wide margin.
WORKER_TIMEOUT_S = 300


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["jit", "pmap"])
def test_two_processes_of_four_devices_equal_one_process_of_eight(kind, tmp_path):
  out, port = tmp_path / "result.npz", free_port()
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
         "XLA_FLAGS": xla_flags_with_devices(4)}
  procs = [subprocess.Popen([sys.executable, str(TESTS / "multiprocess_worker.py"), str(pid),
                             str(port), kind, str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for pid in (0, 1)]
  try:
    logs = [p.communicate(timeout=WORKER_TIMEOUT_S)[0] for p in procs]
  finally:
    for p in procs:  # never leave a worker behind
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  reference = run_steps(jaxgan.parallel.data_parallel_step(kind), sgd_state(n_critic=2),
                        image_batches(2), jax.random.key(7))
  with np.load(out) as result:
    leaves = [result[f"arr_{i}"] for i in range(len(result.files))]
  assert len(leaves) == len(jax.tree.leaves(reference))
  assert_close(leaves, jax.tree.leaves(reference))


def test_program_runs_on_8_devices_pmap_jit_and_2_processes_with_interchangeable_checkpoints(tmp_path, caplog):
  caplog.set_level(logging.INFO)

  def smoke(**overrides):
    config = celeba.get_config("smoke")
    config.update_from_flattened_dict({"num_steps": 4, **overrides})
    return config

  # The program in 2 processes x 4 devices (jax.distributed via the environment, gloo), in the
  # background while the same run goes in-process on 1 and on 8 devices.
  port, workdir = free_port(), tmp_path / "two_processes"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.celeba", "--config=experiments/configs/celeba.py:smoke",
       f"--workdir={workdir}", "--config.num_steps=4"], cwd=TESTS.parent,
      env={**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": str(pid), "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
           "XLA_FLAGS": xla_flags_with_devices(4)},
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for pid in (0, 1)]
  try:
    single = trainer.train(smoke(parallel="none"), tmp_path / "single")
    trainer.train(smoke(parallel="pmap", num_steps=2), tmp_path / "multi")
    assert "training on 8 device(s) (parallel=pmap)" in caplog.text
    last = trainer.train(smoke(parallel="jit"), tmp_path / "multi")  # resumes the pmap checkpoint
    assert "resumed from step 2" in caplog.text
    logs = [p.communicate(timeout=WORKER_TIMEOUT_S)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  assert "training on 8 device(s) (parallel=jit), 2 process(es)" in logs[0]
  assert "step 4/4" in logs[0] and "step 4/4" not in logs[1]  # only process 0 reports
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [3, 4]
  two_processes = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
  for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm"):
    np.testing.assert_allclose(last[key], single[key], rtol=2e-5)
    np.testing.assert_allclose(two_processes[key], single[key], rtol=2e-5)
