"""Faults: SIGKILL and resume, damaged checkpoints, several processes,
workdir ownership, relaunch rules, signals, full disks, report failures."""
import errno
import hashlib
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

from advinv_jax import cli, job, runs, train
from tests._helpers import subprocess_env, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KILL_OVERRIDES = [
    "--config.model.name=cnn", "--config.model.cnn.features=(8,8)",
    "--config.model.cnn.hidden=(16,)", "--config.train.batch_size=32",
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
  with pytest.warns(UserWarning, match="step 6 is damaged"):
    res = train.train_and_evaluate(cfg, str(tmp_path))
  ref = train.train_and_evaluate(cfg, str(tmp_path / "ref"))
  assert res["steps"] == 6
  chex.assert_trees_all_equal(_params(res), _params(ref))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  """jax.distributed on localhost (gloo): 2 processes x 1 device == 1 x 2;
  a mismatching relaunch is refused by both processes."""
  port = str(_free_port())
  out = tmp_path / "two.npz"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests._distributed_worker",
       str(i), port, str(tmp_path / "work"), str(out)],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
      for i in range(2)]
  logs = [p.communicate(timeout=400)[0].decode() for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
    # The mismatching relaunch is refused on both processes, same message.
    assert "REFUSED: " in log and "config.model.cnn.hidden" in log, log[-3000:]
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


# ----------------------------------------------- integrity, ownership, history
# One finished tiny run (6 steps, checkpoints 3 and 6), copied per test.


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("finished") / "run"
  res = train.train_and_evaluate(_small(), str(workdir))
  return workdir, _params(res)


def _small(**train_fields):
  return tiny_config("cnn", "ce", num_steps=6, checkpoint_every=3,
                     **train_fields)


def _copy(finished, tmp_path):
  dst = tmp_path / "run"
  shutil.copytree(finished[0], dst)
  return dst


def _snapshot(workdir):
  """``{path: sha256}`` of every file under ``workdir``."""
  out = {}
  for root, _, files in os.walk(workdir):
    for f in files:
      p = os.path.join(root, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, workdir)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _largest_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs
           if f != "checksums.json"]
  return max(files, key=os.path.getsize)


def test_flipped_bytes_are_caught_and_the_previous_step_used(finished,
                                                             tmp_path):
  """8 overwritten bytes in the newest step's largest data file: read-only
  loading skips it naming the file and moves nothing; a relaunch moves only
  that step aside and retrains to the same parameters, bit for bit."""
  workdir = _copy(finished, tmp_path)
  victim = _largest_file(workdir / "checkpoints" / "6")
  with open(victim, "r+b") as f:
    f.seek(os.path.getsize(victim) // 2)
    f.write(b"\xff" * 8)
  before = _snapshot(workdir)
  with pytest.warns(UserWarning, match=f"step 6 is damaged: {victim} does "
                    "not match its checksum.*nothing moved"):
    _, _, state, _ = train.load_trained(str(workdir), with_extras=False)
  assert int(state.step) == 3 and _snapshot(workdir) == before
  with pytest.warns(UserWarning, match="step 6 is damaged.*moved it"):
    res = train.train_and_evaluate(_small(), str(workdir))
  assert res["steps"] == 6 and not res["finished_before"]
  assert [p.split("-")[0] for p in os.listdir(
      workdir / "checkpoints_corrupt")] == ["6"]
  chex.assert_trees_all_equal(_params(res), finished[1])


def test_emptied_step_is_the_only_one_moved(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  step6 = workdir / "checkpoints" / "6"
  for p in os.listdir(step6):
    shutil.rmtree(step6 / p) if (step6 / p).is_dir() else os.remove(step6 / p)
  with pytest.warns(UserWarning, match="step 6 is damaged"):
    res = train.train_and_evaluate(_small(), str(workdir))
  assert res["steps"] == 6
  assert sorted(int(p) for p in os.listdir(workdir / "checkpoints")
                if p.isdigit()) == [3, 6]
  assert len(os.listdir(workdir / "checkpoints_corrupt")) == 1
  steps = [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl")]
  assert steps == sorted(steps) and steps.count(6) == 3  # train, test, train_eval
  chex.assert_trees_all_equal(_params(res), finished[1])


def test_other_model_is_refused_and_nothing_moves(finished, tmp_path):
  """A relaunch with another width is refused naming the field; allowing the
  mismatch meets the checkpoint's shapes: a refusal, not a quarantine. The
  read-only loader given an edited config.json refuses too."""
  workdir = _copy(finished, tmp_path)
  before = _snapshot(workdir)
  cfg = _small()
  cfg.model.cnn.features = (8, 16)
  with pytest.raises(runs.ConfigMismatchError,
                     match=r"config.model.cnn.features: \[8, 8\] -> \[8, 16\].*"
                     "resume_mismatch=allow"):
    train.train_and_evaluate(cfg, str(workdir))
  cfg.train.resume_mismatch = "allow"
  with pytest.raises(runs.CheckpointMismatchError,
                     match="step 6 .* does not match the model.*Nothing was "
                     "moved"):
    train.train_and_evaluate(cfg, str(workdir))
  assert _snapshot(workdir) == before
  with open(workdir / "config.json") as f:
    raw = json.load(f)
  raw["model"]["cnn"]["features"] = [8, 16]
  with open(workdir / "config.json", "w") as f:
    json.dump(raw, f)
  before = _snapshot(workdir)
  with pytest.raises(runs.CheckpointMismatchError):
    train.load_trained(str(workdir), with_extras=False)
  assert _snapshot(workdir) == before


@pytest.mark.parametrize("field,value", [("train.batch_size", 64),
                                         ("optimizer.learning_rate", 0.1),
                                         ("seed", 1)])
def test_relaunch_with_other_computation_is_refused(finished, tmp_path,
                                                    field, value):
  workdir = _copy(finished, tmp_path)
  before = _snapshot(workdir)
  cfg = _small()
  *parents, leaf = field.split(".")
  (cfg[parents[0]] if parents else cfg)[leaf] = value
  with pytest.raises(runs.ConfigMismatchError, match=f"config.{field}: "):
    train.train_and_evaluate(cfg, str(workdir))
  assert _snapshot(workdir) == before


def test_finished_run_is_kept_and_extension_is_recorded(finished, tmp_path):
  """The same config again: nothing rewritten. More steps: allowed, trained,
  recorded in config_history.jsonl; config.json keeps the past."""
  workdir = _copy(finished, tmp_path)
  before = _snapshot(workdir)
  again = train.train_and_evaluate(_small(), str(workdir))
  assert again["finished_before"] and _snapshot(workdir) == before
  longer = _small()
  longer.train.num_steps = 8
  res = train.train_and_evaluate(longer, str(workdir))
  assert res["steps"] == 8
  with open(workdir / "config.json", "rb") as f:
    assert hashlib.sha256(f.read()).hexdigest() == before["config.json"]
  (entry,) = runs.read_history(str(workdir))
  assert entry["event"] == "extend" and entry["resumed_at_step"] == 6
  assert entry["changes"] == {"train.num_steps": [6, 8]}
  assert entry["previous_results"]["steps"] == 6
  cfg, _, state, _ = train.load_trained(str(workdir), with_extras=False)
  assert cfg.train.num_steps == 8 and int(state.step) == 8


def test_relaunch_changing_another_architectures_section_is_accepted(
    finished, tmp_path):
  """The run is a cnn: a change in config.model.firevnet (which it never
  reads) is not a change of the computation; it is accepted and recorded."""
  workdir = _copy(finished, tmp_path)
  other = _small()
  other.model.firevnet.width = 64
  res = train.train_and_evaluate(other, str(workdir))
  assert res["steps"] == 6
  (entry,) = runs.read_history(str(workdir))
  assert entry["event"] == "change"
  assert entry["changes"] == {"model.firevnet.width": [8, 64]}


def test_second_run_on_a_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = tmp_path / "run"
  os.makedirs(workdir)
  lock = workdir / ".lock"
  live = subprocess.Popen([sys.executable, "-c", "import time; "
                           "time.sleep(60)"])
  try:
    me = {"pid": live.pid, "host": socket.gethostname(), "started": "t0"}
    lock.write_text(json.dumps(me))  # a live holder
    with pytest.raises(runs.WorkdirBusyError,
                       match=f"in use by pid {live.pid} on host"):
      train.train_and_evaluate(_small(), str(workdir))
    lock.write_text(json.dumps({**me, "host": "elsewhere"}))
    with pytest.raises(runs.WorkdirBusyError, match="host elsewhere"):
      runs.WorkdirLock(str(workdir)).acquire()
  finally:
    live.kill()
    live.wait()
  gone = subprocess.Popen(["true"])
  gone.wait()
  lock.write_text(json.dumps({**me, "pid": gone.pid}))
  with pytest.warns(UserWarning, match="stale lock"):
    with runs.WorkdirLock(str(workdir)):
      assert json.loads(lock.read_text())["pid"] == os.getpid()
  assert not lock.exists()


def test_corrupt_config_json_names_the_file(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  (workdir / "config.json").write_text('{"model": {"width": 3')
  for call in (lambda: train.train_and_evaluate(_small(), str(workdir)),
               lambda: train.load_trained(str(workdir))):
    with pytest.raises(runs.RunError,
                       match=f"{workdir}/config.json is not valid JSON.*"
                       "new --workdir"):
      call()


def test_full_disk_is_one_line(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  def full(*a, **k):
    raise RuntimeError("handle is closed") from OSError(
        errno.ENOSPC, "No space left on device")

  ckpt = runs.Checkpointer(str(tmp_path))
  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  with pytest.raises(runs.DiskFullError) as e:
    ckpt.save(1, {"a": np.zeros(3, np.float32)})
  line, code = cli.one_line_error(e.value)
  assert code == 1 and "\n" not in line and line.startswith(
      "error: disk full: no space left on the device of")


def test_failed_report_keeps_training_outputs(finished, tmp_path,
                                              monkeypatch):
  """The report dies half-way (a PNG written, then a full disk): no partial
  file appears, the summary says so in one line, training outputs stay."""
  workdir = _copy(finished, tmp_path)

  def dies(model, params, x, y, cfg, out_dir, *a, **k):
    with open(os.path.join(out_dir, "metamers.png"), "wb") as f:
      f.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(job, "robustness_report", dies)
  cfg = _small()
  cfg.report.enabled = True
  before = _snapshot(workdir)
  summary = job.run(cfg, str(workdir))
  assert "disk full" in summary["report_error"]
  assert "-m experiments.robustness_report" in summary["report_error"]
  after = _snapshot(workdir)
  assert {k: v for k, v in after.items() if k != runs.HISTORY} == before
  assert summary["steps"] == 6


def test_sigint_during_the_report_is_one_line_and_keeps_outputs(
    finished, tmp_path, monkeypatch):
  """Ctrl-C while the report runs: no staging folder or partial report is
  left, the training outputs stay, and main prints one line (exit 130)."""
  workdir = _copy(finished, tmp_path)

  def interrupted(*a, **k):
    raise KeyboardInterrupt

  monkeypatch.setattr(job, "robustness_report", interrupted)
  cfg = _small()
  cfg.report.enabled = True
  before = _snapshot(workdir)
  with pytest.raises(KeyboardInterrupt) as e:
    job.run(cfg, str(workdir))
  after = _snapshot(workdir)
  assert {k: v for k, v in after.items() if k != runs.HISTORY} == before
  assert not [p for p in os.listdir(workdir) if p.startswith(".staging")]
  line, code = cli.one_line_error(e.value)
  assert code == 130 and "\n" not in line and "relaunch" in line


def test_second_signal_exits_at_once():
  exits = []
  stop = runs.StopOnSignal(grace_s=60)
  stop._exit = exits.append
  stop._handle(signal.SIGINT, None)
  assert stop.signum == signal.SIGINT and not exits
  stop._handle(signal.SIGINT, None)
  assert exits == [128 + signal.SIGINT]
  stop.__exit__()
  late = runs.StopOnSignal(grace_s=0.01)
  late._exit = exits.append
  late._handle(signal.SIGTERM, None)
  time.sleep(0.5)
  assert exits[-1] == 128 + signal.SIGTERM  # no step boundary in time
  late.__exit__()


def test_sigterm_saves_at_the_next_step_and_exits_in_one_line(tmp_path):
  workdir = tmp_path / "term"
  ckpts = workdir / "checkpoints"
  cmd = _main_cmd(workdir)
  cmd[cmd.index("--config.train.num_steps=40")] = (
      "--config.train.num_steps=100000")
  cmd[cmd.index("--config.train.checkpoint_every=4")] = (
      "--config.train.checkpoint_every=1000")
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None and not (
      metrics.exists() and metrics.stat().st_size):
    time.sleep(0.05)
  assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
  proc.send_signal(signal.SIGTERM)
  err = proc.communicate(timeout=120)[1].decode().strip().splitlines()
  assert proc.returncode == 128 + signal.SIGTERM, err[-20:]
  step = int(err[-1].split("SIGTERM at step ")[1].split(":")[0])
  assert f"checkpoint step {step} saved" in err[-1]
  assert [int(p) for p in os.listdir(ckpts) if p.isdigit()] == [step]
  assert not [p for p in os.listdir(ckpts) if "tmp" in p]
  assert not (workdir / ".lock").exists()
  logged = [json.loads(l)["step"] for l in open(metrics)]
  assert logged == list(range(2, step + 1, 2))


@pytest.mark.parametrize("field,value,match", [
    ("model.firevnet.depth", 0, "model.firevnet.depth=0 must be >= 1"),
    ("loss.label_smoothing", 1.5, r"label_smoothing=1.5 must lie in \[0, 1\)"),
    ("report.linf_eps", (), "linf_eps is empty"),
    ("report.num_examples", 0, "num_examples=0 must be > 0"),
    ("report.pgd_steps", 0, "pgd_steps=0 must be > 0"),
    ("report.pgd_loss", "hinge", "pgd_loss='hinge' is not one of"),
    ("report.invariance_pairs", -1, "invariance_pairs=-1 must be >= 0"),
    ("report.invariance_lr", 0.0, "invariance_lr=0.0 must be > 0"),
    ("model.cnn.features", (8, 0), r"features=\(8, 0\) must be a tuple of ints >= 1"),
    ("loss.ice.nuisance_hidden", (0,), "must be a tuple of ints >= 1"),
    ("train.resume_mismatch", "yes", "is not one of"),
])
def test_config_ranges_are_checked_before_data_loads(tmp_path, field, value,
                                                     match):
  from advinv_jax.config import ConfigError
  cfg = _small()
  cfg.report.enabled = True
  *parents, key = field.split(".")
  section = cfg
  for p in parents:
    section = section[p]
  section[key] = value
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(cfg, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
