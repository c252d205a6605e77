"""Checkpoints written by an older jaxgan still restore; read-only restores change nothing."""

import shutil

import jax
import numpy as np
import optax

import jaxgan
from jaxgan.checkpointing import Checkpointer


def mlp_state_with_ema():
  return jaxgan.create_state(
      jax.random.key(0),
      generator=jaxgan.models.MLPGenerator(data_shape=(2,), hidden_dims=(8,), batch_norm=True),
      discriminator=jaxgan.models.MLPDiscriminator(hidden_dims=(8,)), g_optimizer=optax.adam(1e-3),
      d_optimizer=optax.adam(1e-3), latent_dim=2, data_shape=(2,), ema_decay=0.9)


def test_a_checkpoint_without_the_ema_batch_norm_statistics_restores(tmp_path, caplog):
  state = mlp_state_with_ema()
  state = state.replace(g_batch_stats=jax.tree.map(lambda v: v + 0.5, state.g_batch_stats))
  checkpointer = Checkpointer(tmp_path, asynchronous=False)
  # Before g_ema_batch_stats existed the state had no such field: save the other fields only.
  fields = ("step", "g_params", "d_params", "g_batch_stats", "d_batch_stats", "g_opt_state",
            "d_opt_state", "g_ema_params", "g_historical_params", "d_historical_params")
  checkpointer.save(7, {f: getattr(state, f) for f in fields}, {"note": "old"})
  checkpointer.save(8, state.replace(g_ema_batch_stats=None), {"note": "field left empty"})
  checkpointer.wait()
  for step in (7, 8):
    restored, meta = checkpointer.restore(mlp_state_with_ema(), step=step)
    # The EMA starts from G's statistics, as older versions evaluated it.
    for got, want in zip(jax.tree.leaves(restored.g_ema_batch_stats),
                         jax.tree.leaves(state.g_batch_stats)):
      np.testing.assert_array_equal(got, want)
    for got, want in zip(jax.tree.leaves(restored.g_ema_params),
                         jax.tree.leaves(state.g_ema_params)):
      np.testing.assert_array_equal(got, want)
  assert "no BatchNorm statistics for the EMA of G" in caplog.text
  checkpointer.save(9, state, {})
  checkpointer.wait()
  caplog.clear()
  restored, meta = checkpointer.restore(mlp_state_with_ema())  # a current one: as saved
  assert meta["step"] == 9 and "no BatchNorm statistics" not in caplog.text
  for got, want in zip(jax.tree.leaves(restored.g_ema_batch_stats),
                       jax.tree.leaves(state.g_ema_batch_stats)):
    np.testing.assert_array_equal(got, want)
  checkpointer.close()


def test_a_read_only_restore_skips_a_damaged_checkpoint_without_moving_it(tmp_path):
  """Readers (sampling, evaluation) fall back past a damaged newest checkpoint and leave the
  workdir as it is; only a writer quarantines it, out of the way of its next saves."""
  state = mlp_state_with_ema()
  directory = tmp_path / "checkpoints"
  writer = Checkpointer(directory, asynchronous=False)
  for step in (1, 2):
    writer.save(step, state.replace(step=jax.numpy.asarray(step)), {})
  writer.wait()
  writer.close()
  state_dir = directory / "2" / "state"
  for p in [state_dir / "manifest.ocdbt", *state_dir.glob("ocdbt.process_*")]:
    shutil.rmtree(p) if p.is_dir() else p.unlink()

  reader = Checkpointer(directory, asynchronous=False, read_only=True)
  restored, meta = reader.restore(mlp_state_with_ema())
  reader.close()
  assert int(restored.step) == 1
  assert (directory / "2").is_dir() and not (tmp_path / "corrupt_checkpoints").exists()

  writer = Checkpointer(directory, asynchronous=False)
  restored, meta = writer.restore(mlp_state_with_ema())
  writer.close()
  assert int(restored.step) == 1
  assert not (directory / "2").exists()
  assert len(list((tmp_path / "corrupt_checkpoints").iterdir())) == 1
