"""``train_and_evaluate(config, workdir)``: the whole training job.

Validates the config, loads the data, builds model, objective and optimiser
(``_experiment.py``, ``_finetune.py``), resumes from the newest complete
checkpoint in ``workdir``, trains with data parallelism over all devices,
checkpoints every ``train.checkpoint_every`` steps and at the end, and
evaluates on the test split.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any, Dict, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from advinv_jax import data as data_lib
from advinv_jax import losses
from advinv_jax._settings import ConfigError, validate_config
from advinv_jax.models import MODEL_SECTIONS
from advinv_jax.runs import (Checkpointer, Run, StopOnSignal, check_values,
                             read_json_file, write_atomic)
from advinv_jax.train._finetune import build_experiment
from advinv_jax.train._parallel import (AXIS, check_batch_divisible,
                                        data_parallel, make_mesh, replicate,
                                        shard_batch, to_host)
from advinv_jax.train._step import make_train_step
from advinv_jax.train._trained import run_extras
from advinv_jax.train._writers import MetricWriter


class NonFiniteError(FloatingPointError):
  """Training produced a NaN/Inf; the message names step, term, checkpoint."""


def check_config(config, mesh=None) -> None:
  """Everything about a config that can be checked before its data loads:
  tuple element types and finite numbers (:func:`check_values`), the schema
  (``validate_config``), the batch size against the devices of ``mesh``
  and the processes, and that ``train.init_from`` names a workdir. Raises
  one ``ConfigError`` naming the field and the fix."""
  check_values(config)     # first: the schema's range checks compare them
  validate_config(config)
  if mesh is not None:
    try:
      check_batch_divisible(config.train.batch_size, mesh,
                            "config.train.batch_size")
    except ValueError as e:
      raise ConfigError(str(e)) from None
  src = config.train.init_from
  if src and not os.path.isfile(os.path.join(src, "config.json")):
    raise ConfigError(
        f"config.train.init_from={src!r}: no trained run there "
        f"({os.path.join(src, 'config.json')} not found); give the --workdir "
        "of a finished run, or '' to start from scratch.")


def _batches(source, config, start_step: int) -> Iterator[Dict[str, np.ndarray]]:
  """This process's slices of the global batches, from ``start_step`` on."""
  bs = config.train.batch_size
  spe = max(1, len(source) // bs)
  epoch, skip = divmod(start_step, spe)
  while True:
    yield from data_lib.iterate_batches(source, bs, seed=config.seed,
                                        epoch=epoch, shuffle=True,
                                        drop_remainder=True, start_step=skip)
    epoch, skip = epoch + 1, 0


def make_eval_fn(logits_fn, mesh):
  """Jitted data-parallel ``(params, batch, mask) -> sums`` for evaluation."""

  def local(params, batch, mask):
    logits = logits_fn(params, batch["image"])
    labels = batch["label"]
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32) * mask
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, labels[:, None], -1)[:, 0] * mask
    sums = {"correct": correct.sum(), "nll": nll.sum(), "count": mask.sum()}
    return jax.lax.psum(sums, AXIS)

  return data_parallel(local, mesh, in_specs=(P(), P(AXIS), P(AXIS)),
                       out_specs=P())


def evaluate(eval_fn, params, source, batch_size: int, mesh) -> Dict[str, float]:
  """Accuracy and mean NLL over a whole split (padded last batch, masked)."""
  n = len(source)
  n_dev, n_proc, pi = mesh.size, jax.process_count(), jax.process_index()
  bs = max(n_dev, batch_size // n_dev * n_dev)
  local = bs // n_proc
  totals = {"correct": 0.0, "nll": 0.0, "count": 0.0}
  for start in range(0, n, bs):
    idx = np.arange(start + pi * local, start + (pi + 1) * local)
    valid = idx < n
    got = source.get(idx[valid])
    pad = local - int(valid.sum())
    batch = {
        "image": np.concatenate([got["image"], np.zeros(
            (pad,) + got["image"].shape[1:], np.float32)]),
        "label": np.concatenate([got["label"], np.zeros((pad,), np.int32)]),
    }
    out = to_host(eval_fn(params, shard_batch(batch, mesh),
                          shard_batch(valid.astype(np.float32), mesh)))
    for k in totals:
      totals[k] += float(out[k])
  count = max(totals["count"], 1.0)
  return {"accuracy": totals["correct"] / count,
          "error": 1.0 - totals["correct"] / count,
          "nll": totals["nll"] / count, "count": int(totals["count"])}


def _nonfinite_terms(metrics: Dict[str, float]):
  return sorted(k for k, v in metrics.items() if not np.isfinite(v))


def train_and_evaluate(config, workdir: str, *, mesh=None,
                       stop_after: Optional[int] = None,
                       run: Optional[Run] = None) -> Dict[str, Any]:
  """Trains and evaluates the model described by ``config`` in ``workdir``.

  The run holds ``workdir`` throughout (``advinv_jax.runs.Run``: its lock,
  taken once; given as ``run`` by a caller that holds it already). A
  relaunch resumes from the newest good checkpoint after its config is
  checked against the workdir's (:func:`relaunch_plan`); a finished run
  (``results.json`` written, all steps done) is returned as it is, nothing
  rewritten. SIGINT/SIGTERM save a checkpoint at the next step boundary and
  raise :class:`RunInterrupted` (:class:`StopOnSignal`). Metrics come to
  the host only at log steps; non-finite steps are detected there and at
  checkpoint steps (``state.skipped`` grew), so a NaN/Inf is reported with
  the range of steps it happened in.

  Args:
    config: an ml_collections ConfigDict following ``advinv_jax/config.py``.
    workdir: where checkpoints, metrics and results go; a run resumes from
      the newest complete checkpoint found here.
    mesh: device mesh (default: all devices).
    stop_after: stop (after checkpointing) once this many steps are done in
      this call; for tests of resumption.
    run: the ``advinv_jax.runs.Run`` holding ``workdir`` (``job.run``'s);
      None: this call holds it.

  Returns:
    A dict with ``model``, ``state`` (host numpy), ``dataset``, ``eval``
    (test metrics), ``train_eval``, ``extras`` (e.g. the differential bias),
    ``steps``, ``finished_before`` (True: the workdir held the finished
    run already) and ``report_changes`` (``{field: [old, new]}`` of the
    ``report.*`` fields that differ from the recorded config: not recorded
    here; ``advinv_jax.job.run`` records them once a report is written with
    them).
  """
  mesh = make_mesh() if mesh is None else mesh
  check_config(config, mesh)
  if run is None:
    with Run(workdir) as run:
      return _start(config, run, mesh, stop_after)
  if os.path.abspath(run.workdir) != os.path.abspath(workdir):
    raise ValueError(f"run holds {run.workdir!r}, not the workdir {workdir!r}.")
  return _start(config, run, mesh, stop_after)


def _start(config, run: Run, mesh, stop_after):
  """The relaunch check, the data and model, the newest checkpoint, then
  training: nothing is recorded in the workdir before all of them worked."""
  workdir = run.workdir
  with StopOnSignal() as stop:
    plan = run.plan(config, MODEL_SECTIONS)
    setup = build_experiment(config)
    ckpt = Checkpointer(workdir, keep=config.train.keep_checkpoints)
    try:
      restored_step, restored = ckpt.restore_latest(setup.state)
      if plan is not None and plan["entry"] is not None:
        # an extension replaces results.json at its end: keep the old one
        previous = read_json_file(os.path.join(workdir, "results.json"),
                                  "not kept in the history")
        if previous is not None:
          plan["entry"]["previous_results"] = previous
      run.start(plan, restored_step)
      result = _train(config, workdir, mesh, setup, ckpt, restored_step,
                      restored, stop, stop_after)
    finally:
      ckpt.close()
  result["report_changes"] = plan["report_changes"] if plan else {}
  return result


class _Sync(NamedTuple):
  """The loop's host-side bookkeeping (replaced, never mutated)."""
  step: int                  # steps done
  synced: int                # last step whose skipped count was read
  skipped: int               # ``state.skipped`` at ``synced``
  last_ckpt: Optional[int]   # last step saved (None: none yet)


def _train(config, workdir, mesh, setup, ckpt, restored_step, restored, stop,
           stop_after):
  """Trains from the restored checkpoint (or step 0) to the end, or to a
  signal / ``stop_after``; at the end evaluates and writes results.json."""
  state, start, total = setup.state, 0, setup.total_steps
  if restored is not None:
    state, start = restored, int(restored_step)
    print(f"Resumed from checkpoint step {start} in {ckpt.directory}")
  result = {"model": setup.model, "dataset": setup.dataset,
            "objective": setup.objective, "extras": {},
            "finished_before": False}
  if start >= total:
    done = read_json_file(os.path.join(workdir, "results.json"),
                          "evaluating the final checkpoint again to rewrite "
                          "it")
    if done is not None:
      return _finished_before(workdir, result, state, start, done)
  sync = _Sync(start, start, int(state.skipped), restored_step)
  writer = MetricWriter(workdir, resume_step=start)
  try:
    state, sync = _loop(config, mesh, setup, ckpt, state, sync, stop,
                        stop_after, writer)
    if stop.signum is not None and sync.step < total:
      raise stop.interrupted(sync.step, (
          f"checkpoint step {sync.last_ckpt} saved in {ckpt.directory}"
          if sync.last_ckpt is not None else
          "no step was done, nothing saved"))
    host_state = to_host(state)
    result.update(state=host_state, steps=sync.step)
    if sync.step >= total:
      _evaluate_and_write(config, workdir, mesh, setup.model, host_state,
                          setup.dataset, writer, sync.step, result)
  finally:
    writer.close()
  return result


def _finished_before(workdir, result, state, start, done):
  """``result`` of a run whose workdir holds it finished (results.json)."""
  print(f"{workdir} holds a finished run ({done['steps']} steps, "
        "results.json): nothing to train; raise config.train.num_steps / "
        "num_epochs to extend it, or use a new --workdir.")
  result.update(state=state, steps=start, eval=done["test"],
                train_eval=done["train"], extras=done.get("extras", {}),
                finished_before=True)
  return result


def _loop(config, mesh, setup, ckpt, state, sync, stop, stop_after, writer):
  """The steps from ``sync.step`` on: logs every ``train.log_every``,
  checkpoints when due, on a signal and after ``stop_after`` steps.

  Returns:
    ``(state, sync)``: the (replicated) state and bookkeeping at the stop.
  """
  total, start = setup.total_steps, sync.step
  train_step = make_train_step(setup.model, setup.objective, setup.optimizer,
                               dequant_noise=config.train.dequant_noise,
                               axis_name=AXIS)
  p_step = data_parallel(train_step, mesh, in_specs=(P(), P(AXIS), P()),
                         out_specs=(P(), P()), donate_argnums=(0,))
  state = replicate(state, mesh)
  progress = _progress_bar(config, start, total)
  batches = _batches(setup.dataset.train, config, start)
  t_log, n_log = time.perf_counter(), 0
  try:
    while sync.step < total and stop.signum is None:
      batch = shard_batch(next(batches), mesh)
      state, metrics = p_step(state, batch,
                              jax.random.fold_in(setup.step_rng, sync.step))
      sync, n_log = sync._replace(step=sync.step + 1), n_log + 1
      step = sync.step
      enough = stop_after is not None and step - start >= stop_after
      if step % config.train.log_every == 0 or step == total:
        sync = _log(config, state, metrics, sync, n_log, t_log, writer,
                    progress, ckpt)
        t_log, n_log = time.perf_counter(), 0
      if progress is not None:
        progress.update(1)
      every = config.train.checkpoint_every
      if ((every > 0 and step % every == 0) or step == total or enough
          or stop.signum is not None):
        sync = _save(config, state, sync, ckpt)
      if enough:
        break
  finally:
    if progress is not None:
      progress.close()
  return state, sync


def _progress_bar(config, start, total):
  """A tqdm bar on process 0 when ``train.progress_bar``, else None."""
  if not (config.train.progress_bar and jax.process_index() == 0
          and start < total):
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, desc="train", unit="step",
              dynamic_ncols=True)


def _log(config, state, metrics, sync, n_log, t_log, writer, progress, ckpt):
  """Brings the metrics to the host (a sync), checks the skipped steps and
  writes ``train/`` metrics with the throughput since ``t_log``."""
  metrics = {k: float(v) for k, v in to_host(metrics).items()}
  sync = _check_finite(config, state, sync, metrics, ckpt)
  dt = time.perf_counter() - t_log
  metrics["examples_per_sec"] = n_log * config.train.batch_size / max(dt,
                                                                      1e-9)
  metrics["skipped_steps"] = float(sync.skipped)
  writer.write(sync.step, metrics, prefix="train/")
  if progress is not None:
    progress.set_postfix(loss=f"{metrics['loss']:.4f}",
                         acc=f"{metrics.get('accuracy', float('nan')):.3f}",
                         ex_s=f"{metrics['examples_per_sec']:.0f}")
  return sync


def _save(config, state, sync, ckpt):
  """Checks the skipped steps since the last sync, then saves a checkpoint."""
  if sync.synced != sync.step:
    sync = _check_finite(config, state, sync, None, ckpt)
  ckpt.save(sync.step, to_host(state))
  return sync._replace(last_ckpt=sync.step)


def _check_finite(config, state, sync, metrics, ckpt):
  """At a host sync: stop or warn when steps in ``(sync.synced,
  sync.step]`` were skipped as non-finite (``state.skipped`` grew).

  Returns:
    ``sync`` with ``synced`` at ``sync.step`` and the new skipped count.

  Raises:
    NonFiniteError: ``train.on_nonfinite == 'stop'`` and a step was
      skipped.
  """
  skipped = int(to_host(state.skipped))
  step, since, new = sync.step, sync.synced, skipped - sync.skipped
  sync = sync._replace(synced=step, skipped=skipped)
  if new == 0:
    return sync
  bad = (_nonfinite_terms(metrics) if metrics else []) or [
      "loss or gradients"]
  where = (f"at step {step}" if step - since == 1 else
           f"at step {step} ({new} of steps {since + 1}-{step})")
  if config.train.on_nonfinite == "stop":
    raise NonFiniteError(
        f"non-finite value in {', '.join(bad)} {where}; those updates were "
        "not applied. Last good checkpoint: "
        + (f"step {sync.last_ckpt} in {ckpt.directory}"
           if sync.last_ckpt is not None else "none yet")
        + ". Lower config.optimizer.learning_rate, set "
        "config.optimizer.grad_clip_norm, or set "
        "config.train.on_nonfinite='skip' to skip such steps.")
  warnings.warn(f"non-finite {', '.join(bad)} {where}; {new} step(s) "
                "skipped.")
  return sync


def _evaluate_and_write(config, workdir, mesh, model, host_state, dataset,
                        writer, step, result):
  """Test / train evaluation into ``metrics.jsonl``, ``result`` and an
  atomically written ``results.json``."""

  params = replicate(host_state.params, mesh)
  result["extras"].update(run_extras(config, model, host_state.params,
                                     dataset.train))
  eval_fn = make_eval_fn(losses.with_bias(
      model, result["extras"].get("differential_bias")), mesh)
  test = evaluate(eval_fn, params, dataset.test, config.eval.batch_size, mesh)
  train = evaluate(eval_fn, params, dataset.split("train"),
                   config.eval.batch_size, mesh)
  writer.write(step, test, prefix="test/")
  writer.write(step, train, prefix="train_eval/")
  result.update(eval=test, train_eval=train)
  if jax.process_index() == 0:
    write_atomic(os.path.join(workdir, "results.json"), json.dumps(
        {"steps": step, "test": test, "train": train,
         "extras": result["extras"],
         "skipped_steps": int(host_state.skipped)}, indent=1))
