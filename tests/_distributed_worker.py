"""One process of the two-process jax.distributed test (run by test_faults as
``python -m tests._distributed_worker`` from the repository root)."""
import sys


def main():
  pid, port, workdir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2,
                             process_id=pid)
  import numpy as np
  from advinv_jax import train
  from tests._helpers import tiny_config
  assert jax.device_count() == 2 and jax.local_device_count() == 1
  cfg = tiny_config("cnn", "ce", num_steps=4, checkpoint_every=2)
  res = train.train_and_evaluate(cfg, workdir)
  if pid == 0:
    flat = {"/".join(map(str, k)): np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(res["state"].params)}
    np.savez(out, accuracy=res["eval"]["accuracy"], **flat)
  # A relaunch with another model is refused by process 0's check: every
  # process must raise it (none may wait in a collective for the others).
  cfg.model.cnn.hidden = (32,)
  try:
    train.train_and_evaluate(cfg, workdir)
  except train.ConfigMismatchError as e:
    print(f"REFUSED: {str(e).splitlines()[0][:200]}", flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
