"""Run handling: overrides that replace, validation before anything is
written, the lock across restarts and races, report changes on a finished
run, signals outside training, damaged workdir files, the report tool on a
live or read-only run, and one-line refusals on every path."""
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import warnings

import pytest
from absl import flags
from ml_collections import config_flags

from advinv_jax import cli, job, runs, train
from advinv_jax.config import ConfigError, default_config
from advinv_jax.models import MODEL_SECTIONS
from tests._helpers import ROOT, subprocess_env
from tests.test_faults import _copy, _small, _snapshot, finished  # noqa: F401

# ------------------------------------------------------------------ overrides

REPEATED = ["--config.model.cnn.features=(8,8)",
            "--config.model.cnn.features=(4,)",
            "--config.report.linf_eps=(0.1,)", "--config.report.linf_eps=0.2",
            "--config.seed=3", "--config.seed=4",
            "--config.model.name=cnn", "--config.model.name=mlp"]


@pytest.mark.parametrize("kind", ["experiment", "main"])
def test_a_repeated_override_replaces(kind, monkeypatch):
  """The last of repeated ``--config.<field>`` wins for tuple, scalar and
  string fields, through the experiments' ``DEFINE_config_dict`` and main's
  ``DEFINE_config_file`` (ml_collections appends repeated tuples)."""
  argv = ["prog"] + (["--config=configs/default.py"] if kind == "main"
                     else []) + REPEATED
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads it on define
  fv = flags.FlagValues()
  if kind == "main":
    holder = config_flags.DEFINE_config_file("config", None, flag_values=fv,
                                             lock_config=True)
  else:
    holder = config_flags.DEFINE_config_dict("config", default_config(),
                                             flag_values=fv, lock_config=True)
  fv(argv)
  c = holder.value
  assert c.model.cnn.features == (4,)
  assert c.report.linf_eps == (0.2,)
  assert (c.seed, c.model.name) == (4, "mlp")
  assert config_flags.get_override_values(fv["config"])[
      "model.cnn.features"] == (4,)


def test_wrong_element_types_and_non_finite_numbers_are_one_line():
  """A string where a tuple of numbers belongs, and NaN / Inf anywhere:
  one ConfigError naming the field and the fix, before any data loads."""
  cfg = _small()
  cfg.report.linf_eps = ("0.1",)
  with pytest.raises(ConfigError, match=r"config.report.linf_eps=\('0.1',\):"
                     r" '0.1' is not a number.*--config.report.linf_eps=\("):
    train.check_config(cfg)
  for value in (float("nan"), float("inf")):
    cfg = _small()
    cfg.optimizer.learning_rate = value
    with pytest.raises(ConfigError, match="config.optimizer.learning_rate="
                       f"{value} must be a finite number"):
      train.check_config(cfg)
  with pytest.raises(cli.UsageError, match=r"--config.report.linf_eps='0.1'"
                     ".*cannot be casted"):
    cli.apply_overrides(_small(), {"report.linf_eps": "0.1"})
  from experiments import _common
  with pytest.raises(ConfigError, match="learning_rate=nan must be a finite"):
    _common.prepare({"a": _small(), "b": _small()},
                    {"optimizer.learning_rate": float("nan")})


# -------------------------------------------------------- validation up front


@pytest.mark.parametrize("field,value,match", [
    ("optimizer.learning_rate", float("nan"), "must be a finite number"),
    ("train.init_from", "/nonexistent/run", "no trained run there"),
    ("train.batch_size", 5000, r"is larger than the \d+ training examples"),
])
def test_a_failed_start_leaves_the_workdir_as_found(tmp_path, field, value,
                                                    match):
  """A start refused for its data or model writes nothing: a new workdir is
  not created, an empty one stays empty, and the corrected command then
  starts as new (no "trained with another config")."""
  cfg = _small()
  section, key = field.split(".")
  cfg[section][key] = value
  for workdir in (tmp_path / "new", tmp_path / "empty"):
    if workdir.name == "empty":
      workdir.mkdir()
    with pytest.raises(ConfigError, match=match):
      train.train_and_evaluate(cfg, str(workdir))
    assert (os.listdir(workdir) == [] if workdir.name == "empty"
            else not workdir.exists())
  plan = runs.relaunch_plan(_small(), str(tmp_path / "empty"), MODEL_SECTIONS)
  assert plan["config_json"] is not None and plan["entry"] is None


# ------------------------------------------------------------------------ lock


def _sleeper():
  return subprocess.Popen([sys.executable, "-c", "import time; "
                           "time.sleep(60)"])


def test_lock_holder_identity_survives_pid_reuse(tmp_path):
  """A lock names its holder by boot id and process start time as well as
  PID: a recorded PID that now names this very process (a restart in a new
  PID namespace) or a live process started at another time is gone; a
  reboot on the same host is gone; a live holder, or one on another
  machine, is not."""
  me = runs._lock._identity()
  live = _sleeper()
  try:
    ticks = runs._lock._start_ticks(live.pid)
    assert ticks is not None
    holder = {**me, "pid": live.pid, "start_ticks": ticks}
    assert not runs.holder_is_gone(holder)
    assert runs.holder_is_gone({**holder, "start_ticks": ticks - 1})
    assert runs.holder_is_gone({**me})            # this process's PID
    assert runs.holder_is_gone({**holder, "boot_id": "another-boot"})
    assert not runs.holder_is_gone(
        {**holder, "boot_id": "another-boot", "host": "elsewhere"})
    assert runs.holder_is_gone({})               # unreadable lock file
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({**me, "started": "t0"}))   # our PID, reused
    with pytest.warns(UserWarning, match="took over the stale lock"):
      with runs.WorkdirLock(str(tmp_path)):
        assert json.loads(lock.read_text())["start_ticks"] == me[
            "start_ticks"]
    assert not lock.exists()
  finally:
    live.kill()
    live.wait()


def _race(workdir, barrier, results):
  lock = runs.WorkdirLock(workdir)
  barrier.wait()
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      lock._acquire()     # process 0's part (no jax in the forked child)
    won = True
  except runs.WorkdirBusyError:
    won = False
  results.put(won)
  barrier.wait()          # winners hold the lock until all have tried
  lock.release()


def test_stale_lock_takeover_has_one_winner(tmp_path):
  """12 relaunches race to take over the same stale lock, 5 times: exactly
  one holds the workdir each time (the takeover runs under a flock and
  replaces only the stale holder's bytes)."""
  ctx = multiprocessing.get_context("fork")
  gone = subprocess.Popen(["true"])
  gone.wait()
  for trial in range(5):
    workdir = tmp_path / f"t{trial}"
    workdir.mkdir()
    (workdir / ".lock").write_text(json.dumps(
        {"pid": gone.pid, "host": socket.gethostname(), "started": "t0"}))
    n = 12
    barrier, results = ctx.Barrier(n), ctx.Queue()
    # Daemons with timeouts: a child stuck after fork (jax's threads in the
    # parent) fails the test instead of holding pytest at exit.
    procs = [ctx.Process(target=_race, args=(str(workdir), barrier, results),
                         daemon=True) for _ in range(n)]
    for p in procs:
      p.start()
    won = [results.get(timeout=60) for _ in range(n)]
    for p in procs:
      p.join(timeout=60)
      assert p.exitcode == 0
    assert sum(won) == 1, (trial, won)
    assert not (workdir / ".lock").exists()


# ------------------------------------------------- report changes and signals


def _stub_report(calls, fail=None):
  def report(model, params, x, y, cfg, out_dir, *a, **k):
    calls.append(tuple(cfg.linf_eps))
    if fail is not None:
      fail()
    with open(os.path.join(out_dir, "report.json"), "w") as f:
      json.dump({"linf_eps": list(cfg.linf_eps)}, f)
    return {"warnings": [], "headline": {}}
  return report


def test_a_changed_report_field_reruns_the_report_and_is_recorded_after(
    finished, tmp_path, monkeypatch):  # noqa: F811
  """A finished run relaunched with another ``report.*``: the report is
  written again with it, and the change is recorded only once it is; a
  report that fails records nothing (the next relaunch tries again)."""
  workdir = _copy(finished, tmp_path)
  calls = []
  cfg = _small()
  cfg.report.enabled = True
  monkeypatch.setattr(job, "robustness_report", _stub_report(calls))
  job.run(cfg, str(workdir))                       # the first report
  assert calls == [tuple(cfg.report.linf_eps)]
  changed = _small()
  changed.report.enabled = True
  changed.report.linf_eps = (0.2,)

  def disk_full():
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(job, "robustness_report",
                      _stub_report(calls, disk_full))
  summary = job.run(changed, str(workdir))
  assert "disk full" in summary["report_error"]
  assert [e["changes"] for e in runs.read_history(str(workdir))] == [
      {"report.enabled": [False, True]}]
  monkeypatch.setattr(job, "robustness_report", _stub_report(calls))
  job.run(changed, str(workdir))
  assert calls[-1] == (0.2,)
  with open(workdir / "report.json") as f:
    assert json.load(f)["linf_eps"] == [0.2]
  last = runs.read_history(str(workdir))[-1]
  assert last["event"] == "report"
  assert last["changes"]["report.linf_eps"][1] == [0.2]
  n = len(calls)
  job.run(changed, str(workdir))                   # nothing left to do
  assert len(calls) == n and len(runs.read_history(str(workdir))) == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_report_is_one_line_and_leaves_nothing(
    finished, tmp_path, monkeypatch, signum):  # noqa: F811
  """SIGTERM (a scheduler's time limit) or SIGINT while the report runs:
  the lock and the staging folder are gone, the training outputs stay, one
  line with the shell's code; a stale staging folder is cleaned at the next
  start."""
  workdir = _copy(finished, tmp_path)
  stale = workdir / ".staging-999999999"
  stale.mkdir()
  (stale / "half.png").write_bytes(b"x")
  before = _snapshot(workdir)
  handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
  monkeypatch.setattr(job, "robustness_report", _stub_report(
      [], lambda: os.kill(os.getpid(), signum)))
  cfg = _small()
  cfg.report.enabled = True
  with pytest.raises(KeyboardInterrupt) as e:
    job.run(cfg, str(workdir))
  line, code = cli.one_line_error(e.value)
  assert code == 128 + signum and "\n" not in line
  assert signal.Signals(signum).name in line and "relaunch" in line
  left = sorted(p for p in os.listdir(workdir) if p.startswith("."))
  assert left == [], left
  assert {k: v for k, v in _snapshot(workdir).items()
          if not k.startswith(".staging")} == {
              k: v for k, v in before.items() if not k.startswith(".staging")}
  assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == (
      handlers)


# --------------------------------------------------------- damaged records


def test_a_damaged_results_json_is_named_and_rewritten(finished, tmp_path):  # noqa: F811
  workdir = _copy(finished, tmp_path)
  good = json.loads((workdir / "results.json").read_text())
  (workdir / "results.json").write_text('{"steps": 6, "te')
  with pytest.warns(UserWarning, match=f"{workdir}/results.json is damaged.*"
                    "evaluating the final checkpoint again"):
    res = train.train_and_evaluate(_small(), str(workdir))
  assert res["steps"] == 6 and not res["finished_before"]
  again = json.loads((workdir / "results.json").read_text())
  assert again["steps"] == 6
  assert abs(again["test"]["accuracy"] - good["test"]["accuracy"]) < 1e-6


def test_a_cut_history_line_is_skipped_and_the_next_starts_a_new_line(
    tmp_path):
  hist = tmp_path / runs.HISTORY
  first = {"event": "change", "changes": {"eval.batch_size": [128, 64]}}
  hist.write_text(json.dumps(first) + "\n" + '{"event": "ext')   # cut line
  runs.record_history(str(tmp_path), {
      "event": "extend", "changes": {"train.num_steps": [6, 8]}}, 6)
  with pytest.warns(UserWarning, match=f"{hist}:2 is damaged"):
    entries = runs.read_history(str(tmp_path))
  assert [e["event"] for e in entries] == ["change", "extend"]
  assert hist.read_text().count("\n") == 3


# ------------------------------------------------------------- report tool


def test_the_report_tool_names_its_step_writes_only_to_out_and_retries(
    finished, tmp_path, monkeypatch):  # noqa: F811
  """With --out nothing in the run folder changes (a read-only run works);
  source.json names the checkpoint step and whether the run had finished;
  a step that a live run's rotation deletes after it was listed is not
  called damaged: the steps are listed again."""
  from advinv_jax import report as report_lib
  from experiments import robustness_report as tool
  workdir = _copy(finished, tmp_path)
  (workdir / "results.json").unlink()             # as if still training
  before = _snapshot(workdir)
  monkeypatch.setattr(report_lib, "robustness_report", _stub_report([]))
  real_steps = runs.Checkpointer.steps
  listed = []

  def steps(self):
    listed.append(1)
    return real_steps(self) + ([9] if len(listed) == 1 else [])  # rotated

  monkeypatch.setattr(runs.Checkpointer, "steps", steps)
  with warnings.catch_warnings():
    warnings.simplefilter("error")                # no "damaged" warning
    tool.run(str(workdir), num_examples=8, out=str(tmp_path / "out"))
  assert len(listed) == 2
  assert _snapshot(workdir) == before
  source = json.loads((tmp_path / "out" / "source.json").read_text())
  assert source["checkpoint_step"] == 6 and source["total_steps"] == 6
  assert source["finished"] is False
  assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".")]


# ------------------------------------------------------ one-line refusals


def _refusal(args, module="advinv_jax.main", env=None):
  return subprocess.Popen(
      [sys.executable, "-m", module, *args], cwd=ROOT,
      env=env or subprocess_env(1), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def test_refusals_are_one_line_with_the_traceback_behind_debug(tmp_path):
  """Refusals of the command lines end in one line (an empty --workdir=, a
  config file that raises, a workdir that is a file, the report tool on a
  missing folder); ADVINV_DEBUG=1 shows the traceback instead."""
  raising = tmp_path / "raising.py"
  raising.write_text("def get_config():\n  raise RuntimeError('broken "
                     "config file')\n")
  afile = tmp_path / "afile"
  afile.write_text("x")
  tiny = ["--config=configs/default.py", "--config.model.name=cnn",
          "--config.data.name=digits", "--config.report.enabled=False"]
  cases = {
      "empty workdir": (["--workdir=", *tiny], "usage:"),
      "config raises": ([f"--config={raising}", "--workdir=w"],
                        "broken config file"),
      "workdir is a file": ([f"--workdir={afile}", *tiny],
                            "is a file, not a folder"),
      "report tool, missing": (["--workdir=/nonexistent/run"],
                               "is not a folder"),
  }
  procs = {name: _refusal(args, "experiments.robustness_report"
                          if name.startswith("report") else "advinv_jax.main")
           for name, (args, _) in cases.items()}
  procs["debug"] = _refusal(cases["config raises"][0], env=dict(
      subprocess_env(1), ADVINV_DEBUG="1"))
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=180)
    lines = [l for l in (out + err).splitlines() if l.strip()]
    assert proc.returncode not in (0, None), (name, err)
    if name == "debug":
      assert "Traceback (most recent call last)" in err, err
      continue
    assert len(lines) == 1, (name, lines[-30:])
    assert cases[name][1] in lines[0], (name, lines[0])


def test_run_refusals_are_one_line(tmp_path):
  """The refusals behind a run, as main prints them (``cli.one_line_error``):
  a 4,000-character path (leaving no folder behind), the batch size against
  the devices, a report tool that cannot write into a run folder or to an
  over-long --out."""
  from experiments import robustness_report as tool
  long_path = str(tmp_path / ("d" * 250) / ("e" * 250)) * 8
  cfg = _small()
  cfg.train.batch_size = 30
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / "report_test").write_text("not a folder")
  for call, match in [
      (lambda: train.check_workdir(long_path),
       r"characters\) is not writable \(File name too long\); pass a "
       "--workdir"),
      (lambda: train.check_config(cfg, train.make_mesh()),
       "batch_size=30 is not divisible by the 4 devices"),
      (lambda: tool.run(str(run_dir)), "cannot write the report into .*"
       "read-only: pass --out="),
      (lambda: tool.run(str(run_dir), out=long_path),
       r"cannot write the report into .*\(File name too long\); pass "
       "another --out"),
  ]:
    with pytest.raises(Exception) as e:
      call()
    line, code = cli.one_line_error(e.value)
    assert code in (1, 2) and "\n" not in line and len(line) < 600, line
    assert re.search(match, line), line
  # The over-long paths' refusals removed every folder they had created
  # (the parents that fit), not only the last one.
  assert sorted(os.listdir(tmp_path)) == ["run"]


# ---------------------------------------------------------------- determinism


def test_one_step_gradient_agrees_across_device_counts():
  """Bitwise at one device count; across 1 and 4 devices the gradient of one
  step (the pmean-ed gradient the optimiser sees) agrees to float32
  reduction-order error, not bitwise.

  The tolerance is set from the arithmetic, not from a run: splitting the
  batch over devices reorders the sums over the batch, the largest being a
  convolution kernel's gradient, K = B * H * W = 32 * 8 * 8 = 2048 terms.
  Rounding errors of a reordered float32 sum grow like sqrt(K) u
  (u = 2^-24: 2.7e-6 relative to the sum of magnitudes; the worst case,
  K u = 1.2e-4, needs every rounding to go the same way); 1e-5 per leaf,
  relative to the leaf's largest entry, allows ~4 times the typical error.
  A device-dependent random number or a missing pmean errs by O(1). Many
  steps amplify such rounding differences (README, Determinism), so whole
  training runs are not compared here.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax.sharding import PartitionSpec as P
  from tests._helpers import assert_trees_rel_close, tiny_config
  # The "optimiser" keeps the gradient as its state and applies nothing.
  keep = optax.GradientTransformation(
      init=lambda p: jax.tree_util.tree_map(jnp.zeros_like, p),
      update=lambda g, s, p=None: (jax.tree_util.tree_map(jnp.zeros_like, g),
                                   g))
  cfg = tiny_config("cnn", "ce")
  exp = train.build_experiment(cfg)
  step = train.make_train_step(exp.model, exp.objective, keep,
                               axis_name=train.AXIS)
  state = exp.state.replace(opt_state=keep.init(
      {"model": exp.state.params, "loss": exp.state.loss_params}))
  batch = exp.dataset.train.get(np.arange(cfg.train.batch_size))
  grads = {}
  for n in (1, 4, 4):
    mesh = train.make_mesh(jax.devices()[:n])
    fn = train.data_parallel(step, mesh, in_specs=(P(), P(train.AXIS), P()),
                             out_specs=(P(), P()))
    out, _ = fn(train.replicate(state, mesh), train.shard_batch(batch, mesh),
                jax.random.PRNGKey(0))
    got = train.to_host(out.opt_state)["model"]
    if n in grads:    # the same device count again: bitwise
      for a, b in zip(jax.tree_util.tree_leaves(got),
                      jax.tree_util.tree_leaves(grads[n])):
        np.testing.assert_array_equal(a, b)
    grads[n] = got
  assert_trees_rel_close(grads[4], grads[1], tol=1e-5)


# --------------------------------------------------------- multi-process


def test_a_dead_peer_stops_the_others_in_one_line():
  """Two jax.distributed processes watching each other (3 s timeout): when
  process 1 is killed, process 0 exits within seconds with one line naming
  it and saying how to relaunch (not a gloo / heartbeat abort after 100 s).
  (A dead coordinator, process 0, makes the others abort at once from
  inside jax: bounded, but not one line.)"""
  import time
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests._peer_worker", str(i), port], cwd=ROOT,
      env=subprocess_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  try:
    for p in procs:
      assert p.stdout.readline().strip() == "READY", p.stderr.read()[-2000:]
    procs[1].kill()
    t = time.monotonic()
    _, err = procs[0].communicate(timeout=60)
    waited = time.monotonic() - t
  finally:
    for p in procs:
      p.kill()
      p.wait()
  lines = [l for l in err.splitlines() if l.strip()]
  assert procs[0].returncode == 1 and len(lines) == 1, lines[-20:]
  assert "process 1 of 2 stopped" in lines[0]
  assert "Relaunch all 2 processes" in lines[0]
  assert waited < 30, waited
