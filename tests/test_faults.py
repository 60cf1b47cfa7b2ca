"""Faults: SIGKILL and resume, corrupted checkpoints, several processes."""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from advinv_jax import train
from tests._helpers import subprocess_env, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KILL_OVERRIDES = [
    "--config.model.name=cnn", "--config.model.features=(8,8)",
    "--config.model.hidden=(16,)", "--config.train.batch_size=32",
    "--config.train.num_steps=40", "--config.train.checkpoint_every=4",
    "--config.train.log_every=2", "--config.train.progress_bar=False",
    "--config.report.enabled=False",
]


def _params(res):
  return jax.tree_util.tree_map(np.asarray, res["state"].params)


def _env():
  return subprocess_env(1)


def _main_cmd(workdir):
  return [sys.executable, "-m", "advinv_jax.main", "--config=configs/default.py",
          f"--workdir={workdir}", *KILL_OVERRIDES]


def _restored_params(workdir):
  """The newest checkpoint's params, restored bytes as written (no compute)."""
  _, _, state, _ = train.load_trained(str(workdir), with_extras=False)
  return jax.tree_util.tree_map(np.asarray, state.params)


def test_sigkill_then_resume_reaches_same_params(tmp_path):
  """Killed + resumed run == uninterrupted run, bit for bit.

  XLA CPU's results depend on the forced host device count (an ulp between 1
  and 4 devices), so all three legs run as subprocesses under one device
  configuration (``_env``): determinism holds for the same machine kind,
  device count and flags.
  """
  workdir = tmp_path / "killed"
  ckpts = workdir / "checkpoints"
  kill_at = random.Random().choice([8, 12, 16, 20])
  proc = subprocess.Popen(_main_cmd(workdir), cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    names = os.listdir(ckpts) if ckpts.exists() else []
    steps = [int(p) for p in names if p.isdigit()]  # complete steps only
    if any(s >= kill_at for s in steps):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "training finished before the kill: " + \
      proc.stderr.read().decode()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  last = max(int(p) for p in os.listdir(ckpts) if p.isdigit())
  assert last < 40
  # Resume and the uninterrupted reference run side by side (2 processes).
  legs = [subprocess.Popen(_main_cmd(w), cwd=ROOT, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
          for w in (workdir, tmp_path / "full")]
  for leg in legs:
    err = leg.communicate(timeout=400)[1].decode()
    assert leg.returncode == 0, err[-3000:]
  for w in (workdir, tmp_path / "full"):
    with open(w / "results.json") as f:
      assert json.load(f)["steps"] == 40
  chex.assert_trees_all_equal(_restored_params(workdir),
                              _restored_params(tmp_path / "full"))


def test_corrupted_latest_checkpoint_falls_back_with_warning(tmp_path):
  cfg = tiny_config("cnn", "ce", num_steps=6, checkpoint_every=3)
  train.train_and_evaluate(cfg, str(tmp_path), stop_after=6)
  ckpts = tmp_path / "checkpoints"
  assert sorted(int(p) for p in os.listdir(ckpts) if p.isdigit()) == [3, 6]
  # Truncate every data file of the newest step.
  for root, _, files in os.walk(ckpts / "6"):
    for f in files:
      path = os.path.join(root, f)
      with open(path, "r+b") as fh:
        fh.truncate(max(0, os.path.getsize(path) // 3))
  with pytest.warns(UserWarning, match="step 6 .* could not be read"):
    res = train.train_and_evaluate(cfg, str(tmp_path))
  ref = train.train_and_evaluate(cfg, str(tmp_path / "ref"))
  assert res["steps"] == 6
  chex.assert_trees_all_equal(_params(res), _params(ref))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  """jax.distributed on localhost (gloo): 2 processes x 1 device == 1 x 2."""
  port = str(_free_port())
  out = tmp_path / "two.npz"
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "tests", "_distributed_worker.py"),
       str(i), port, str(tmp_path / "work"), str(out)],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
      for i in range(2)]
  logs = [p.communicate(timeout=400)[0].decode() for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  two = np.load(out)
  cfg = tiny_config("cnn", "ce", num_steps=4, checkpoint_every=2)
  one = train.train_and_evaluate(cfg, str(tmp_path / "one"),
                                 mesh=train.make_mesh(jax.devices()[:2]))
  flat = {"/".join(map(str, k)): np.asarray(v) for k, v in
          jax.tree_util.tree_leaves_with_path(one["state"].params)}
  assert set(flat) == set(two.files) - {"accuracy"}
  for k, v in flat.items():
    np.testing.assert_allclose(two[k], v, atol=1e-5, rtol=1e-5)
  assert abs(float(two["accuracy"]) - one["eval"]["accuracy"]) < 1e-6
