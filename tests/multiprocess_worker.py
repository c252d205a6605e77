"""One process of the 2-process x 4-device test: python multiprocess_worker.py PID PORT KIND OUT.
The test gives it 4 simulated CPU devices through XLA_FLAGS (`helpers.xla_flags_with_devices`)."""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, kind, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                           initialization_timeout=60)

import numpy as np  # noqa: E402

import jaxgan  # noqa: E402
from helpers import image_batches, run_steps, sgd_state  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
state = sgd_state(n_critic=2)
step = jaxgan.parallel.data_parallel_step(kind)
half = slice(pid * 8, (pid + 1) * 8)  # this process feeds its half of each global batch
new, history = run_steps(step, state, image_batches(2), jax.random.key(7), rows=half)
if pid == 0:
  np.savez(out, *jax.tree.leaves((new, history)))
jax.distributed.shutdown()
