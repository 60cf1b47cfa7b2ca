"""The oracle: an independent classifier that judges what an image looks like.

Whether a metamer "looks like" its nuisance source B is a question about the
image, not about the model under test, whose decision it was built to fool.
The oracle answers it instead of an eye: a classifier of another
architecture than the model under test, trained separately on the same
training data, and never optimised against (no metamer or attack ever takes
its gradient). A metamer that the oracle reads as B's class while the model
reads it as A's is an invariance example (Jacobsen et al. 2019; Tramer et
al. 2020); one it reads as neither has left the data's domain.

The oracle is trained once per (training data, architecture, settings, key)
and cached as ``oracle_<architecture>_<hash>.msgpack`` (+ ``.json``) in a
folder (the run's workdir): later calls load it.

Usage::

  orc = train_oracle(x_train, y_train, cache_dir=workdir, rng=key,
                     architecture=oracle_architecture(model))
  j = judge_metamers(orc.logits, x_met, x_a, x_b, y_a, y_b)
  summarize_judgement(j)    # shares as B's / A's / other class, bounds
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from advinv_jax import losses
from advinv_jax.runs import write_atomic
from advinv_jax.invariance._analytic import out_of_bounds
from advinv_jax.models import build_model

Array = jax.Array

# The oracle's architectures (small, fast to train on CPU) and settings.
ORACLE_MODELS = {
    "cnn": {"name": "cnn", "cnn": {"features": (16, 32), "hidden": (64,)}},
    "mlp": {"name": "mlp", "mlp": {"hidden": (512, 256)}},
}
ORACLE_STEPS = 1000
ORACLE_BATCH_SIZE = 128
ORACLE_LR = 1e-3


def oracle_architecture(model=None) -> str:
  """The oracle's architecture for a model under test: ``'mlp'`` when that
  model is the library's CNN, else ``'cnn'`` (fiRevNets, MLPs, a plain
  ``logits_fn`` or None)."""
  base = getattr(model, "base", model)
  module = getattr(base, "module", None)
  return "mlp" if type(module).__name__ == "_CNN" else "cnn"


class Oracle(NamedTuple):
  """A trained oracle.

  Attributes:
    architecture: ``'cnn'`` or ``'mlp'`` (:data:`ORACLE_MODELS`).
    model: its :class:`advinv_jax.models.Model`; params: its parameters.
    test_accuracy: accuracy on the held-out set given to
      :func:`train_oracle` (None without one).
    path: the cached parameters' file.
    loaded: True when this call loaded the cache instead of training.
  """
  architecture: str
  model: Any
  params: Any
  test_accuracy: Optional[float]
  path: str
  loaded: bool

  def logits(self, x: Array) -> Array:
    """``f32[B, H, W, C] -> f32[B, K]``, the oracle's logits."""
    return self.model.logits(self.params, x)


def _fingerprint(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("steps", "batch_size", "lr"))
def _fit(model, x, y, key, *, steps, batch_size, lr):
  """Adam on cross-entropy over ``steps`` minibatches drawn with
  replacement, one ``lax.scan``."""
  k_init, k_data = jax.random.split(key)
  params = model.init(k_init, x[:1])
  opt = optax.adam(lr)

  def step(carry, k):
    p, s = carry
    idx = jax.random.randint(k, (batch_size,), 0, x.shape[0])
    g = jax.grad(lambda q: losses.cross_entropy(model.logits(q, x[idx]),
                                                y[idx]))(p)
    upd, s = opt.update(g, s, p)
    return (optax.apply_updates(p, upd), s), None

  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)),
                                jax.random.split(k_data, steps))
  return params


def _accuracy(model, params, x, y, chunk=1000) -> float:
  logits_fn = jax.jit(model.logits)
  hits = sum(int(jnp.sum(jnp.argmax(logits_fn(params, x[i:i + chunk]), -1)
                         == y[i:i + chunk]))
             for i in range(0, x.shape[0], chunk))
  return hits / x.shape[0]


def train_oracle(x_train: Array, y_train: Array, *, cache_dir: str,
                 rng: Array, architecture: str = "cnn",
                 num_classes: Optional[int] = None,
                 x_test: Optional[Array] = None,
                 y_test: Optional[Array] = None,
                 steps: int = ORACLE_STEPS,
                 batch_size: int = ORACLE_BATCH_SIZE,
                 lr: float = ORACLE_LR) -> Oracle:
  """Trains the oracle once and caches it in ``cache_dir``; loads it after.

  Adam (``lr``) on cross-entropy for ``steps`` minibatches of
  ``batch_size`` training images drawn with replacement. The cache key is a
  SHA-256 of the training images and labels, the architecture, the settings
  and ``rng``: other data or settings train a new oracle.

  Args:
    x_train: ``f32[N, H, W, C]`` training images; y_train: ``int[N]``.
    cache_dir: folder of the cache (created), e.g. the run's workdir.
    rng: PRNG key (initialisation and minibatches).
    architecture: ``'cnn'`` or ``'mlp'``; choose one unlike the model under
      test (:func:`oracle_architecture`).
    num_classes: K; default ``max(y_train) + 1``.
    x_test, y_test: optional held-out set for ``Oracle.test_accuracy``.
    steps, batch_size, lr: optimisation settings.

  Returns:
    An :class:`Oracle`.
  """
  if architecture not in ORACLE_MODELS:
    raise ValueError(f"architecture={architecture!r} is not an oracle "
                     f"architecture; choose one of {sorted(ORACLE_MODELS)}.")
  xs = tuple(getattr(x_train, "shape", ()))
  if len(xs) != 4 or xs[0] == 0:
    raise ValueError(f"x_train must be f32[N, H, W, C] with N > 0, got shape "
                     f"{xs}.")
  if tuple(getattr(y_train, "shape", ())) != xs[:1]:
    raise ValueError(f"y_train must be int[{xs[0]}] (one label per image), "
                     f"got shape {getattr(y_train, 'shape', None)}.")
  if (x_test is None) != (y_test is None):
    raise ValueError("pass both x_test and y_test, or neither.")
  if not (int(steps) == steps >= 1 and int(batch_size) == batch_size >= 1
          and lr > 0):
    raise ValueError(f"steps={steps} and batch_size={batch_size} must be "
                     f"positive integers and lr={lr} > 0.")
  y_np = np.asarray(y_train).astype(np.int32)
  k = int(num_classes) if num_classes is not None else int(y_np.max()) + 1
  if y_np.min() < 0 or y_np.max() >= k:
    raise ValueError(f"y_train must lie in [0, {k}), got range "
                     f"[{y_np.min()}, {y_np.max()}].")
  model = build_model(ORACLE_MODELS[architecture], xs[1:], k)
  settings = dict(architecture=architecture, steps=int(steps),
                  batch_size=int(batch_size), lr=float(lr), num_classes=k,
                  model=ORACLE_MODELS[architecture])
  key = _fingerprint(x_train, y_np, jax.random.key_data(rng),
                     np.frombuffer(json.dumps(settings, sort_keys=True,
                                              default=list).encode(),
                                   np.uint8))[:16]
  os.makedirs(cache_dir, exist_ok=True)
  path = os.path.join(cache_dir, f"oracle_{architecture}_{key}.msgpack")
  meta_path = path[:-len(".msgpack")] + ".json"
  if os.path.exists(path) and os.path.exists(meta_path):
    with open(path, "rb") as f:
      params = jax.tree_util.tree_map(jnp.asarray,
                                      serialization.msgpack_restore(f.read()))
    with open(meta_path) as f:
      meta = json.load(f)
    return Oracle(architecture, model, params, meta["test_accuracy"], path,
                  True)
  params = _fit(model, jnp.asarray(x_train, jnp.float32), jnp.asarray(y_np),
                rng, steps=int(steps), batch_size=int(batch_size),
                lr=float(lr))
  acc = None
  if x_test is not None:
    acc = _accuracy(model, params, jnp.asarray(x_test, jnp.float32),
                    jnp.asarray(y_test, jnp.int32))
  write_atomic(path, serialization.msgpack_serialize(
      jax.tree_util.tree_map(np.asarray, params)))
  write_atomic(meta_path, json.dumps(dict(settings, test_accuracy=acc),
                                     default=list, indent=1))
  return Oracle(architecture, model, params, acc, path, False)


class OracleJudgement(NamedTuple):
  """The oracle's reading of images built from two sources (all ``[B]``).

  Attributes:
    label: ``int32``, the oracle's class of each image.
    as_nuisance_source: ``label == y_nuisance_source`` (looks like B).
    as_logits_source: ``label == y_logits_source`` (looks like A).
    as_other: neither.
    in_bounds: share of the image's entries inside ``bounds``.
    overshoot: largest distance of an entry outside ``bounds``.
    l2_to_logits_source, l2_to_nuisance_source: ``||x - A||_2``,
      ``||x - B||_2``.
    linf_to_logits_source, linf_to_nuisance_source: the same in linf.
  """
  label: Array
  as_nuisance_source: Array
  as_logits_source: Array
  as_other: Array
  in_bounds: Array
  overshoot: Array
  l2_to_logits_source: Array
  l2_to_nuisance_source: Array
  linf_to_logits_source: Array
  linf_to_nuisance_source: Array


def judge_metamers(oracle_logits_fn, x: Array, x_logits_source: Array,
                   x_nuisance_source: Array, y_logits_source: Array,
                   y_nuisance_source: Array, *,
                   bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
                   ) -> OracleJudgement:
  """What the oracle reads in metamers (or any images made from A and B).

  Pure and jittable (``oracle_logits_fn`` closed over or static). The
  oracle sees the images as they are (no clipping): an out-of-bounds image
  is judged, and its bound violation reported beside.

  Args:
    oracle_logits_fn: ``f32[B, H, W, C] -> f32[B, K]`` (``Oracle.logits``).
    x: ``f32[B, H, W, C]`` the metamers.
    x_logits_source: ``f32[B, H, W, C]`` A (whose logits x carries).
    x_nuisance_source: ``f32[B, H, W, C]`` B (whose nuisance / start x has).
    y_logits_source, y_nuisance_source: ``int[B]`` their classes (pairs
      with different classes make the three shares a partition).
    bounds: ``(low, high)`` of valid images, or None.

  Returns:
    An :class:`OracleJudgement`.
  """
  shape = tuple(getattr(x, "shape", ()))
  for name, a in (("x_logits_source", x_logits_source),
                  ("x_nuisance_source", x_nuisance_source)):
    if tuple(getattr(a, "shape", ())) != shape:
      raise ValueError(f"{name} has shape {getattr(a, 'shape', None)}; it "
                       f"must match x's {shape} (one source per metamer).")
  for name, a in (("y_logits_source", y_logits_source),
                  ("y_nuisance_source", y_nuisance_source)):
    if tuple(getattr(a, "shape", ())) != shape[:1]:
      raise ValueError(f"{name} must be int[{shape[0] if shape else 'B'}], "
                       f"got shape {getattr(a, 'shape', None)}.")
  if bounds is not None and not float(bounds[0]) < float(bounds[1]):
    raise ValueError(f"bounds={bounds} must be (low, high) with low < high, "
                     "or None.")
  label = jnp.argmax(oracle_logits_fn(x), -1).astype(jnp.int32)
  as_b = label == y_nuisance_source
  as_a = label == y_logits_source
  oob, over = out_of_bounds(x, bounds)
  b = shape[0]

  def dist(src, order):
    d = (x - src).reshape((b, -1))
    return (jnp.sqrt(jnp.sum(d * d, axis=1)) if order == 2
            else jnp.max(jnp.abs(d), axis=1))

  return OracleJudgement(
      label, as_b, as_a, ~(as_a | as_b), 1.0 - oob, over,
      dist(x_logits_source, 2), dist(x_nuisance_source, 2),
      dist(x_logits_source, 0), dist(x_nuisance_source, 0))


def summarize_judgement(j: OracleJudgement) -> Dict[str, Any]:
  """Host summary of an :class:`OracleJudgement`: the shares read as the
  nuisance source's / logits source's / another class, the mean in-bounds
  share, the largest overshoot and the median distances."""
  a = {k: np.asarray(v, np.float64) for k, v in j._asdict().items()}

  def med(v):
    return float(np.median(v)) if v.size else None

  return {
      "num": int(a["label"].size),
      "as_nuisance_source": float(a["as_nuisance_source"].mean()),
      "as_logits_source": float(a["as_logits_source"].mean()),
      "as_other": float(a["as_other"].mean()),
      "in_bounds_share": float(a["in_bounds"].mean()),
      "overshoot_max": float(a["overshoot"].max(initial=0.0)),
      "l2_to_logits_source_median": med(a["l2_to_logits_source"]),
      "l2_to_nuisance_source_median": med(a["l2_to_nuisance_source"]),
      "linf_to_logits_source_median": med(a["linf_to_logits_source"]),
      "linf_to_nuisance_source_median": med(a["linf_to_nuisance_source"]),
  }
