"""Small shared pieces of the tests: tiny configs, parameter perturbation,
random parameters, loading benchmark modules."""
import importlib
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax.config import config_section, default_config, nest_model_fields


def perturb(params, key, scale=0.05):
  """Adds N(0, scale^2) to every leaf (scale / sqrt(C) for LU factors).

  A freshly initialised coupling is the identity; inverse and log-det tests
  run on perturbed parameters so that they prove something.
  """
  leaves, tdef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  out = []
  for (path, a), k in zip(leaves, keys):
    s = scale / np.sqrt(a.shape[0]) if path[-1].key in ("l", "u") else scale
    out.append(a + s * jax.random.normal(k, a.shape, a.dtype))
  return jax.tree_util.tree_unflatten(tdef, out)


def random_params(model, x, rng, scale=0.1):
  """N(0, scale^2) on every parameter leaf of ``model.init(., x)``'s pytree
  (a fresh coupling is the identity, so the parameters are random rather
  than initialised); numpy from ``rng``, so that no per-leaf-shape JAX
  kernels are compiled."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return jax.tree_util.tree_map(
      lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32),
      shapes)


def max_rel_err(a, b) -> float:
  """``max|a - b| / max|b|`` (``b`` the reference; +1e-12 against 0)."""
  return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))


def assert_trees_rel_close(got, want, tol=1e-4, msg=""):
  """Every leaf of ``got`` within ``tol`` of ``want``'s, by
  :func:`max_rel_err` per leaf (gradients of different sizes per leaf)."""
  got_leaves = jax.tree_util.tree_leaves_with_path(got)
  want_leaves = jax.tree_util.tree_leaves(want)
  assert len(got_leaves) == len(want_leaves), (len(got_leaves),
                                               len(want_leaves), msg)
  for (path, a), b in zip(got_leaves, want_leaves):
    err = max_rel_err(a, b)
    assert err <= tol, (f"{jax.tree_util.keystr(path)}: relative error "
                        f"{err:.3g} > {tol} {msg}")


def recording_logits_fn(num_classes: int = 3):
  """A trivial ``logits_fn`` (the first ``num_classes`` pixels) that
  records the type of every input it is called with, for the bad-input
  tests: a check that runs before compilation only ever shows the function
  tracers (shape evaluation), never a concrete array.

  Returns:
    ``(fn, calls)``: ``fn(x: f32[B, ...]) -> f32[B, num_classes]`` and the
    list of the input types it has seen.
  """
  calls = []

  def fn(v):
    calls.append(type(v))
    return v.reshape((v.shape[0], -1))[:, :num_classes]

  return fn, calls


def only_traced(calls) -> bool:
  """Whether a :func:`recording_logits_fn` was called, and only with
  tracers."""
  return bool(calls) and all("Tracer" in t.__name__ for t in calls)


def compiled_conv_labels(fn, *args):
  """The ``dim_labels`` of every convolution in ``jit(fn)``'s compiled
  (optimised) HLO for ``args``, loop bodies and fusions included."""
  hlo = jax.jit(fn).lower(*args).compile().as_text()
  return re.findall(r"convolution\([^\n]*dim_labels=(\S+?)[,\s]", hlo)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(devices: int = 1, *, optimize: bool = False) -> dict:
  """``os.environ`` for a subprocess with ``devices`` forced CPU devices, the
  suite's other XLA flags (tests/conftest.py) and the repo on PYTHONPATH.

  ``optimize=True`` drops the backend optimisation level 0 of the suite: for
  jobs whose time goes into running long loops of small kernels rather
  than compiling (the low-rank study's 10k-step GD: 3x faster)."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 os.environ.get("XLA_FLAGS", "")).split()
  if optimize:
    flags = [f for f in flags if not f.startswith(
        "--xla_backend_optimization_level")]
  return dict(os.environ,
              XLA_FLAGS=" ".join(
                  [f"--xla_force_host_platform_device_count={devices}"]
                  + flags),
              PYTHONPATH=os.pathsep.join(
                  [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


def run_experiment(script, workdir, *args, table=True, optimize=False):
  """Runs ``python -m experiments.<script> --workdir=<workdir> <args>`` in a
  one-device subprocess (:func:`subprocess_env`); asserts it succeeded (and
  wrote ``results.md`` when ``table``); returns its ``results.json``."""
  proc = subprocess.run(
      [sys.executable, "-m", f"experiments.{script}",
       f"--workdir={workdir}", *args],
      cwd=ROOT, env=subprocess_env(1, optimize=optimize), capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  if table:
    assert os.path.exists(os.path.join(workdir, "results.md"))
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def load_benchmark(name):
  """The module ``benchmarks/<name>.py``."""
  return importlib.import_module(f"benchmarks.{name}")


def model_section(**fields):
  """A complete ``config.model`` from flat shorthand (``levels=2,
  batch_chunk=0``): each field goes to its sub-section
  (``config.nest_model_fields``), the rest keep their defaults."""
  return config_section("model", nest_model_fields(fields))


def tiny_config(model="cnn", loss="ce", **train):
  """A config that trains in seconds on the bundled digits."""
  c = default_config()
  c.data.name = "digits"
  c.model.name = model
  c.model.cnn.features = (8, 8)
  c.model.cnn.hidden = c.model.mlp.hidden = (16,)
  c.model.firevnet.levels = 3
  c.model.firevnet.depth = 1
  c.model.firevnet.width = 8
  c.loss.name = loss
  c.loss.ice.nuisance_hidden = (16,)
  c.loss.ice.nuisance_steps = 2
  c.eval.batch_size = 128
  c.report.enabled = False
  train = dict(dict(batch_size=32, num_steps=6, log_every=2,
                    checkpoint_every=3, progress_bar=False), **train)
  for k, v in train.items():
    c.train[k] = v
  return c
