"""``train_and_evaluate(config, workdir)``: the whole training job.

Validates the config, loads the data, builds model, objective and optimiser,
resumes from the newest complete checkpoint in ``workdir``, trains with data
parallelism over all devices, checkpoints every ``train.checkpoint_every``
steps and at the end, and evaluates on the test split.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from typing import Any, Dict, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from advinv_jax import data as data_lib
from advinv_jax import losses
from advinv_jax._settings import ConfigError, migrate_config, validate_config
from advinv_jax.models import MODEL_SECTIONS, build_model
from advinv_jax.runs import (Checkpointer, NotAWorkdirError, Run,
                             StopOnSignal, check_values, read_config_json,
                             read_json_file, write_atomic)
from advinv_jax.train._objectives import make_objective
from advinv_jax.train._optim import (freeze_model_params, make_optimizer,
                                     param_paths)
from advinv_jax.train._parallel import (AXIS, check_batch_divisible,
                                        data_parallel, make_mesh, replicate,
                                        shard_batch, to_host)
from advinv_jax.train._step import init_train_state, make_train_step
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


def num_train_steps(config, num_train: int) -> int:
  spe = max(1, num_train // config.train.batch_size)
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  return int(config.train.num_epochs) * spe


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


def _first_global_batch(source, config):
  """The data-dependent init batch: the first global training batch, or
  ``train.init_batch_size`` images (same shuffle); with ``train.init_noise``
  plus ``U(0, train.dequant_noise)`` (seeded), as the authors' init on 512
  noisy images (train.py ~L80)."""
  bs = config.train.init_batch_size or config.train.batch_size
  if bs > len(source):
    raise ConfigError(f"config.train.init_batch_size={bs} exceeds the "
                     f"{len(source)} training examples; lower it.")
  it = data_lib.iterate_batches(source, bs,
                                seed=config.seed, epoch=0, shuffle=True,
                                drop_remainder=True, process_index=0,
                                process_count=1)
  batch = next(iter(it))
  if config.train.init_noise and config.train.dequant_noise > 0:
    rng = np.random.default_rng([int(config.seed), 21])
    noise = rng.uniform(0.0, config.train.dequant_noise, batch["image"].shape)
    batch = dict(batch, image=(batch["image"] + noise).astype(np.float32))
  return batch


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


class Experiment(NamedTuple):
  """What a config builds before training (see :func:`build_experiment`)."""
  dataset: Any
  model: Any
  objective: Any
  optimizer: Any
  total_steps: int
  state: Any      # freshly initialised TrainState, host numpy
  step_rng: jax.Array


def build_experiment(config) -> Experiment:
  """Loads the data and builds model, objective, optimiser and initial state.

  Deterministic in ``config`` (ActNorm is initialised on the first global
  batch of epoch 0), so a checkpoint of the same config restores into it.
  """
  dataset = data_lib.load_dataset(config.data, seed=config.seed)
  if len(dataset.train) < config.train.batch_size:
    raise ConfigError(
        f"config.train.batch_size={config.train.batch_size} is larger than the "
        f"{len(dataset.train)} training examples; lower it.")
  model = build_model(config.model, dataset.image_shape, dataset.num_classes)
  objective = make_objective(config)
  total = num_train_steps(config, len(dataset.train))
  optimizer = make_optimizer(config.optimizer, total)
  first = _first_global_batch(dataset.train, config)
  model.check_input(first["image"])
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  if config.train.trainable:
    shapes = jax.eval_shape(model.init, init_rng, first["image"])
    optimizer = freeze_model_params(optimizer, shapes, config.train.trainable)
  state = jax.jit(lambda r, x: init_train_state(model, objective, optimizer,
                                                r, x))(init_rng,
                                                       first["image"])
  state = to_host(state)
  if config.train.init_from:
    params = _params_from_workdir(config, state.params)
    state = state.replace(params=params, opt_state=to_host(jax.jit(
        optimizer.init)({"model": params, "loss": state.loss_params})))
  return Experiment(dataset, model, objective, optimizer, total, state,
                    step_rng)


def _params_from_workdir(config, fresh):
  """Model params from ``config.train.init_from``'s newest checkpoint.

  Parameters whose path matches ``config.train.reinit`` keep their fresh
  initialisation (e.g. a new head); every other one must exist in the source
  run with the same shape.
  """
  src_dir = config.train.init_from
  reinit = re.compile(config.train.reinit) if config.train.reinit else None
  _, _, src_state, _ = load_trained(src_dir, with_extras=False)
  src = dict(zip(param_paths(src_state.params),
                 jax.tree_util.tree_leaves(src_state.params)))
  leaves = []
  for path, leaf in zip(param_paths(fresh), jax.tree_util.tree_leaves(fresh)):
    if reinit is not None and reinit.search(path):
      leaves.append(leaf)
      continue
    if path not in src or np.shape(src[path]) != np.shape(leaf):
      got = "missing" if path not in src else f"shape {np.shape(src[path])}"
      raise ConfigError(
          f"config.train.init_from={src_dir!r}: parameter {path!r} "
          f"{np.shape(leaf)} is {got} there; add it to config.train.reinit "
          "to keep it freshly initialised.")
    leaves.append(np.asarray(src[path]))
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(fresh),
                                      leaves)


def load_trained(workdir: str, *, with_extras: bool = True):
  """Restores a finished (or interrupted) run from its workdir (read-only:
  nothing there is moved, deleted or rewritten; a damaged step is skipped
  with a warning, a checkpoint that does not match the config raises
  :class:`CheckpointMismatchError`).

  Args:
    workdir: a workdir of :func:`train_and_evaluate`.
    with_extras: also compute the extras (the differential bias: one pass
      over the training set); False returns ``{}`` for them.

  Returns:
    ``(config, experiment, state, extras)``: the run's config (from
    ``config.json`` and the changes in ``config_history.jsonl``), the
    rebuilt :class:`Experiment`, the newest good checkpoint's TrainState
    (host numpy) and extras (the differential bias).
  """
  raw = read_config_json(workdir)
  if raw is None:
    raise NotAWorkdirError(
        f"{os.path.join(workdir, 'config.json')} not found: {workdir!r} is "
        "not a workdir of advinv_jax.main (train a model there first).")
  config = migrate_config(raw)   # older workdirs: fields added since
  validate_config(config)
  exp = build_experiment(config)
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    step, state = ckpt.restore_latest(exp.state)
  finally:
    ckpt.close()
  if state is None:
    raise NotAWorkdirError(
        f"no readable checkpoint in {workdir}/checkpoints: the run saved "
        "none yet (wait for its first checkpoint), or all are damaged.")
  extras = {}
  if with_extras and config.loss.name == "differential":
    extras["differential_bias"] = differential_bias(
        exp.model, state.params, exp.dataset.train, config.eval.batch_size,
        rule=config.loss.differential.bias)
  return config, exp, state, extras


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


def _train(config, workdir, mesh, setup, ckpt, restored_step, restored, stop,
           stop_after):
  dataset, model, objective = setup.dataset, setup.model, setup.objective
  optimizer, total, state = setup.optimizer, setup.total_steps, setup.state
  step_rng = setup.step_rng
  start = 0
  if restored is not None:
    state, start = restored, int(restored_step)
    print(f"Resumed from checkpoint step {start} in {ckpt.directory}")
  results_path = os.path.join(workdir, "results.json")
  result = {"model": model, "dataset": dataset, "objective": objective,
            "extras": {}, "finished_before": False}
  done = None
  if start >= total:
    done = read_json_file(results_path, "evaluating the final checkpoint "
                          "again to rewrite it")
  if done is not None:
    print(f"{workdir} holds a finished run ({done['steps']} steps, "
          "results.json): nothing to train; raise config.train.num_steps / "
          "num_epochs to extend it, or use a new --workdir.")
    result.update(state=state, steps=start, eval=done["test"],
                  train_eval=done["train"], extras=done.get("extras", {}),
                  finished_before=True)
    return result
  last_ckpt = restored_step

  train_step = make_train_step(model, objective, optimizer,
                               dequant_noise=config.train.dequant_noise,
                               axis_name=AXIS)
  p_step = data_parallel(train_step, mesh, in_specs=(P(), P(AXIS), P()),
                         out_specs=(P(), P()), donate_argnums=(0,))
  skipped_seen = int(state.skipped)
  state = replicate(state, mesh)
  writer = MetricWriter(workdir, resume_step=start)
  progress = None
  if config.train.progress_bar and jax.process_index() == 0 and start < total:
    from tqdm.auto import tqdm
    progress = tqdm(total=total, initial=start, desc="train", unit="step",
                    dynamic_ncols=True)

  def check_finite(step, since, metrics):
    """At a host sync: stop or warn when steps in (since, step] were
    skipped as non-finite (``state.skipped`` grew)."""
    nonlocal skipped_seen
    skipped = int(to_host(state.skipped))
    if skipped == skipped_seen:
      return
    new, skipped_seen = skipped - skipped_seen, skipped
    bad = (_nonfinite_terms(metrics) if metrics else []) or [
        "loss or gradients"]
    where = (f"at step {step}" if step - since == 1 else
             f"at step {step} ({new} of steps {since + 1}-{step})")
    if config.train.on_nonfinite == "stop":
      raise NonFiniteError(
          f"non-finite value in {', '.join(bad)} {where}; those updates were "
          "not applied. Last good checkpoint: "
          + (f"step {last_ckpt} in {ckpt.directory}" if last_ckpt is not None
             else "none yet")
          + ". Lower config.optimizer.learning_rate, set "
          "config.optimizer.grad_clip_norm, or set "
          "config.train.on_nonfinite='skip' to skip such steps.")
    warnings.warn(f"non-finite {', '.join(bad)} {where}; {new} step(s) "
                  "skipped.")

  step = synced = start
  batches = _batches(dataset.train, config, start)
  t_log, n_log = time.perf_counter(), 0
  done_here = 0
  try:
    while step < total and stop.signum is None:
      batch = shard_batch(next(batches), mesh)
      state, metrics = p_step(state, batch, jax.random.fold_in(step_rng, step))
      step += 1
      done_here += 1
      n_log += 1
      save = ((config.train.checkpoint_every > 0
               and step % config.train.checkpoint_every == 0)
              or step == total
              or (stop_after is not None and done_here >= stop_after))
      if step % config.train.log_every == 0 or step == total:
        metrics = {k: float(v) for k, v in to_host(metrics).items()}
        check_finite(step, synced, metrics)
        synced = step
        dt = time.perf_counter() - t_log
        metrics["examples_per_sec"] = n_log * config.train.batch_size / max(
            dt, 1e-9)
        metrics["skipped_steps"] = float(skipped_seen)
        writer.write(step, metrics, prefix="train/")
        t_log, n_log = time.perf_counter(), 0
        if progress is not None:
          progress.set_postfix(
              loss=f"{metrics['loss']:.4f}",
              acc=f"{metrics.get('accuracy', float('nan')):.3f}",
              ex_s=f"{metrics['examples_per_sec']:.0f}")
      if progress is not None:
        progress.update(1)
      if save or stop.signum is not None:
        if synced != step:
          check_finite(step, synced, None)
          synced = step
        ckpt.save(step, to_host(state))
        last_ckpt = step
      if stop_after is not None and done_here >= stop_after:
        break
  except BaseException:
    writer.close()
    raise
  finally:
    if progress is not None:
      progress.close()
  if stop.signum is not None and step < total:
    writer.close()
    raise stop.interrupted(step, (
        f"checkpoint step {last_ckpt} saved in {ckpt.directory}"
        if last_ckpt is not None else "no step was done, nothing saved"))

  host_state = to_host(state)
  result.update(state=host_state, steps=step)
  if step < total:
    writer.close()
    return result
  try:
    _evaluate_and_write(config, workdir, mesh, model, host_state, dataset,
                        writer, step, result)
  finally:
    writer.close()
  return result


def _evaluate_and_write(config, workdir, mesh, model, host_state, dataset,
                        writer, step, result):
  """Test / train evaluation into ``metrics.jsonl``, ``result`` and an
  atomically written ``results.json``."""

  params = replicate(host_state.params, mesh)
  logits_fn = model.logits
  if config.loss.name == "differential":
    bias = differential_bias(model, host_state.params, dataset.train,
                             config.eval.batch_size,
                             rule=config.loss.differential.bias)
    result["extras"]["differential_bias"] = bias
    logits_fn = with_bias(model.logits, bias)
  eval_fn = make_eval_fn(logits_fn, mesh)
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


def with_bias(logits_fn, bias: float):
  """Adds a binary decision bias ``b`` to logit 1: score s + b."""

  def fn(params, x):
    return losses.add_binary_bias(logits_fn(params, x), bias)

  return fn


def differential_bias(model, params, source, batch_size: int,
                      rule: str = "max_accuracy") -> float:
  """Decision bias of differential training over a whole (training) split.

  ``rule``: see :func:`advinv_jax.losses.decision_bias`.
  """
  score = jax.jit(lambda p, x: losses.binary_scores(model.logits(p, x)))
  scores, labels = [], []
  for start in range(0, len(source), batch_size):
    got = source.get(np.arange(start, min(start + batch_size, len(source))))
    scores.append(np.asarray(score(params, got["image"])))
    labels.append(got["label"])
  s, y = np.concatenate(scores), np.concatenate(labels)
  return float(losses.decision_bias(s, y, rule))
