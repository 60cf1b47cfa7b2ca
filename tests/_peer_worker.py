"""One process of a two-process jax.distributed run that only waits, its
peers watched (tests/test_runs.py kills the other one)."""
import sys
import time

import jax

from advinv_jax import runs


def main():
  index, port = int(sys.argv[1]), sys.argv[2]
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2,
                             process_id=index, heartbeat_timeout_seconds=100)
  runs.watch_peers(timeout_s=3.0, period_s=0.25)
  print("READY", flush=True)
  time.sleep(120)


if __name__ == "__main__":
  main()
