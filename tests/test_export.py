"""Every train step, the evaluation step and every attack lower for GPU and TPU.

``jax.export`` lowers a jitted program for another platform on this CPU-only
machine (no compilation: what it proves is that every primitive has a GPU /
TPU lowering and that the program's signature and shardings carry over, not
numerics or speed). Each program is built with the *target* platform's
defaults (``advinv_jax.platform.resolve_config``: on TPU the coupling
subnets compute in bfloat16, on GPU in float32, both with XLA convolutions,
no batch chunks, rolled attack loops); platforms whose resolved configs agree
share one multi-platform export. Train and evaluation steps are the data-
parallel ``jax.shard_map`` programs of ``advinv_jax.train`` over a mesh of
the 4 forced host devices (an exported program records the device count,
here 4, and runs on any 4 devices of the target). Shapes are abstract
(``jax.ShapeDtypeStruct``): nothing is initialised or run.
"""
import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from advinv_jax import attacks, invariance, platform
from advinv_jax.config import default_config
from advinv_jax.models import build_model
from tests._helpers import model_section
from advinv_jax.train import (AXIS, data_parallel, init_train_state,
                              make_eval_fn, make_mesh, make_objective,
                              make_optimizer, make_train_step)

TARGETS = ("gpu", "tpu")
SHAPE = (8, 8, 1)
BATCH = 8           # 2 per device


def _config(loss="ce", **model):
  c = default_config()
  c.loss.name = loss
  c.loss.ice.nuisance_hidden = (8,)
  c.loss.ice.nuisance_steps = 1
  c.model = model_section(**{**dict(levels=2, depth=2, width=4,
                                    batch_chunk=-1), **model})
  return c


def _groups(config):
  """``[(platforms, resolved config)]``: targets with equal resolved configs
  share one export."""
  out = {}
  for p in TARGETS:
    r = platform.resolve_config(config, p)
    out.setdefault(r.to_json(sort_keys=True), ([], r))[0].append(p)
  return list(out.values())


def _spec(shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def _check(exported, plats, fn, args, devices=1):
  """The program is lowered for ``plats``, for ``devices`` devices, and has
  the host program's output shapes and dtypes."""
  assert exported.platforms == tuple(platform.EXPORT_PLATFORMS[p]
                                     for p in plats)
  assert exported.nr_devices == devices
  want = jax.tree_util.tree_leaves(jax.eval_shape(fn, *args))
  assert [(a.shape, a.dtype) for a in exported.out_avals] == [
      (w.shape, w.dtype) for w in want]


TRAIN_CASES = {
    # loss, model fields: reversible and not, scan and unrolled, an
    # ordinary CNN for the differential loss (Nar et al.'s setting).
    "ce_unrolled": ("ce", {}),
    "ce_reversible_scan": ("ce", dict(reversible=True,
                                      reversible_loop="scan")),
    "ice_reversible_unrolled": ("ice", dict(reversible=True,
                                            coupling="additive")),
    "ice_scan_gradient_reversal": ("ice", dict(reversible_loop="scan")),
    "differential_cnn": ("differential", dict(name="cnn", features=(4, 4),
                                              hidden=(8,))),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_step_exports(case):
  loss, model_fields = TRAIN_CASES[case]
  base = _config(loss, **model_fields)
  if case == "ice_scan_gradient_reversal":
    base.loss.ice.minmax = "gradient_reversal"
  mesh = make_mesh()
  num_classes = 2 if loss == "differential" else 10
  for plats, cfg in _groups(base):
    model = build_model(cfg.model, SHAPE, num_classes)
    if "tpu" in plats and cfg.model.name == "firevnet":
      assert cfg.model.compute.dtype == "bfloat16"
    objective = make_objective(cfg)
    optimizer = make_optimizer(cfg.optimizer, 10)
    x = _spec((BATCH,) + SHAPE)
    state = jax.eval_shape(
        lambda r, v: init_train_state(model, objective, optimizer, r, v),
        jax.random.PRNGKey(0), x)
    step = make_train_step(model, objective, optimizer, axis_name=AXIS,
                           dequant_noise=0.01)
    p_step = data_parallel(step, mesh, in_specs=(P(), P(AXIS), P()),
                           out_specs=(P(), P()))
    args = (state, {"image": x, "label": _spec((BATCH,), jnp.int32)},
            _spec((2,), jnp.uint32))
    exported = platform.export(p_step, plats, *args,
                               name=f"{case} train step")
    _check(exported, plats, p_step, args, devices=mesh.size)
    # The new state has the old one's shapes and dtypes (a loop can feed it
    # back): the first outputs are the state's leaves.
    leaves = jax.tree_util.tree_leaves(state)
    assert [(a.shape, a.dtype) for a in exported.out_avals[:len(leaves)]] \
        == [(a.shape, a.dtype) for a in leaves]


def _firevnet(plat):
  """A tiny fiRevNet built with ``plat``'s defaults and its abstract params."""
  cfg = platform.resolve_config(_config(), plat)
  model = build_model(cfg.model, SHAPE, 10)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          _spec((2,) + SHAPE))
  return model, params, platform.defaults(plat)


def test_eval_step_exports():
  mesh = make_mesh()
  for plat in TARGETS:
    model, params, _ = _firevnet(plat)
    fn = make_eval_fn(model.logits, mesh)
    args = (params, {"image": _spec((BATCH,) + SHAPE),
                     "label": _spec((BATCH,), jnp.int32)}, _spec((BATCH,)))
    _check(platform.export(fn, [plat], *args, name="eval step"), [plat], fn,
           args, devices=mesh.size)


def _attack_calls(loop):
  """name -> ``call(logits_fn, x, y, key)``; the AutoAttack family is
  included when this checkout has it (``getattr``)."""
  calls = {
      "pgd_linf": lambda f, x, y, k: attacks.pgd(f, x, y, eps=0.1, steps=2,
                                                 rng=k, loop=loop),
      "pgd_l2": lambda f, x, y, k: attacks.pgd(f, x, y, eps=0.5, norm="l2",
                                               steps=2, rng=k, loop=loop),
      "fgsm": lambda f, x, y, k: attacks.fgsm(f, x, y, eps=0.1),
      "deepfool": lambda f, x, y, k: attacks.deepfool(f, x, y, steps=2,
                                                      candidates=3),
      "fmn": lambda f, x, y, k: attacks.fmn(f, x, y, steps=2, loop=loop),
      "apgd": lambda f, x, y, k: attacks.apgd(f, x, y, eps=0.1, steps=2,
                                              rng=k, loop=loop),
      "apgd_t": lambda f, x, y, k: attacks.apgd(
          f, x, y, eps=0.1, steps=2, loss="dlr", targeted=True,
          num_targets=2, rng=k, loop=loop),
      "square": lambda f, x, y, k: attacks.square(f, x, y, eps=0.1,
                                                  queries=2, rng=k),
      "autoattack": lambda f, x, y, k: attacks.autoattack(
          f, x, y, eps=0.1, steps=2, num_targets=2, queries=2, fmn_steps=2,
          mode="masked", rng=k, loop=loop),
  }
  return calls


ATTACKS = ("pgd_linf", "pgd_l2", "fgsm", "deepfool", "fmn", "apgd", "apgd_t",
           "square", "autoattack")


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_exports(name):
  fn_name = name.split("_")[0] if name != "apgd_t" else "apgd"
  if not hasattr(attacks, fn_name):
    pytest.skip(f"attacks.{fn_name} is not in this checkout")
  for plat in TARGETS:
    model, params, d = _firevnet(plat)
    call = _attack_calls(d.attack_loop)[name]

    def fn(p, x, y, k):
      return call(functools.partial(model.logits, p), x, y, k)

    args = (params, _spec((4,) + SHAPE), _spec((4,), jnp.int32),
            _spec((2,), jnp.uint32))
    _check(platform.export(fn, [plat], *args, name=name), [plat], fn, args)


def test_sharded_pgd_and_metamers_export():
  # An attack over the data-parallel mesh (batch-sharded inputs, the
  # sharding of attacks.shard_batch_attack), and metameric sampling.
  mesh = make_mesh()
  batch, repl = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
  for plat in TARGETS:
    model, params, d = _firevnet(plat)

    def pgd(p, x, y, k):
      return attacks.pgd(functools.partial(model.logits, p), x, y, eps=0.1,
                         steps=2, rng=k, loop=d.attack_loop)

    sharded = jax.jit(pgd, in_shardings=(repl, batch, batch, repl))
    args = (params, _spec((BATCH,) + SHAPE), _spec((BATCH,), jnp.int32),
            _spec((2,), jnp.uint32))
    exported = platform.export(sharded, [plat], *args, name="sharded pgd")
    _check(exported, [plat], pgd, args, devices=mesh.size)
    met = lambda p, a, b: invariance.metameric_sample(model, p, a, b)
    args = (params, _spec((2,) + SHAPE), _spec((2,) + SHAPE))
    _check(platform.export(met, [plat], *args, name="metameric_sample"),
           [plat], met, args)


def test_missing_lowering_names_the_primitive():
  # A CPU-only primitive: the error names it and the platform.
  from jax.extend.core import Primitive
  from jax.interpreters import mlir
  cpu_only = Primitive("cpu_only_op")
  cpu_only.def_abstract_eval(lambda x: x)
  mlir.register_lowering(cpu_only, lambda ctx, x: [x], platform="cpu")
  with pytest.raises(platform.LoweringError,
                     match=r"toy: cannot be lowered for \['cuda'\]: "
                     r"primitive 'cpu_only_op'"):
    platform.export(lambda x: cpu_only.bind(x) * 2, ["gpu"], _spec((3,)),
                    name="toy")


def test_platform_defaults_per_backend():
  # The builders pick the named platform's choices (checked on CPU).
  gpu, tpu, cpu = (platform.defaults(p) for p in ("gpu", "tpu", "cpu"))
  assert platform.defaults("cuda") == gpu
  assert (cpu.conv3x3_impl, cpu.batch_chunk, cpu.compute_dtype) == (
      "xla_gemm_grad", 32, "float32")
  assert (gpu.conv3x3_impl, gpu.batch_chunk, gpu.compute_dtype) == (
      "xla", 0, "float32")
  assert (tpu.conv3x3_impl, tpu.batch_chunk, tpu.compute_dtype) == (
      "xla", 0, "bfloat16")
  assert {d.attack_loop for d in (cpu, gpu, tpu)} == {"fori"}
  assert platform.defaults() == cpu   # these tests run on CPU
  for plat, d in (("gpu", gpu), ("tpu", tpu), ("cpu", cpu)):
    cfg = platform.resolve_config(_config(), plat)
    cfg.report.attack_loop = ""
    cfg = platform.resolve_config(cfg, plat)
    assert cfg.report.attack_loop == d.attack_loop
    model = build_model(cfg.model, SHAPE, 10)
    base = getattr(model, "base", model)
    assert (model is not base) == (d.batch_chunk > 0)
    coupling = base.stages[0].steps.layers[0].layers[2]
    compute = coupling.subnet.compute
    assert (compute.conv3x3_impl, compute.dtype) == (
        d.conv3x3_impl, d.compute_dtype)
  # Explicit values are kept.
  cfg = _config(conv3x3_impl="im2col", compute_dtype="bfloat16_1x1",
                batch_chunk=0)
  kept = platform.resolve_config(cfg, "tpu").model.compute
  assert (kept.conv3x3_impl, kept.dtype, kept.batch_chunk) == (
      "im2col", "bfloat16_1x1", 0)
  with pytest.raises(ValueError, match="platform='npu'"):
    platform.defaults("npu")
