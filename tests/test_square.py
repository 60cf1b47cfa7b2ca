"""Square in segments = Square in one run; an example's result does not
depend on its batch; host-mode AutoAttack's Square (segments, finished
inputs dropped, re-padding) = masked mode's (one run on the whole batch)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advinv_jax import attacks as A
from advinv_jax.attacks import _autoattack as AA
from advinv_jax.attacks import _square as S

D = 16


def linear(seed, k, n):
  """Random linear logits on ``[n, D]`` (any per-example shape of D
  features), labels = predictions."""
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(D, k)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(k,)), jnp.float32)
  x = jnp.asarray(rng.uniform(0.3, 0.7, size=(n, D)), jnp.float32)
  fn = lambda v: v.reshape((v.shape[0], -1)) @ w + b  # noqa: E731
  return fn, x, jnp.argmax(fn(x), -1).astype(jnp.int32)


CASES = [("linf", (D,)), ("l2", (D,)), ("linf", (4, 4, 1)),
         ("l2", (4, 4, 1))]


def _eps(norm):
  return 0.06 if norm == "linf" else 0.25


def _problem(seed, key, norm, shape, n=24, q=60):
  """A random linear model's ``(f, x, y)`` on ``n`` inputs of ``shape`` and
  Square's keywords with ``q`` queries."""
  f, x, y = linear(seed, 3, n)
  kw = dict(eps=_eps(norm), norm=norm, queries=q, bounds=(0.0, 1.0),
            rng=jax.random.PRNGKey(key))
  return f, x.reshape((n,) + shape), y, kw


@pytest.mark.parametrize("norm,shape", CASES)
def test_segments_equal_one_run_bitwise(norm, shape):
  n, q = 24, 60
  f, x, y, kw = _problem(1, 4, norm, shape, n, q)
  one = jax.jit(lambda x: A.square(f, x, y, **kw))(x)
  seg = jax.jit(lambda x, st, stop: S.square_segment(f, x, y, state=st,
                                                     stop=stop, **kw))
  # host mode's first segment: a placeholder state at step 0 -> the start
  st = S.SquareState(step=jnp.int32(0), x_best=x, loss=jnp.zeros((n,)),
                     queries=jnp.zeros((n,), jnp.int32))
  for stop in (5, 23, q - 1):
    st = seg(x, st, jnp.int32(stop))
  np.testing.assert_array_equal(st.x_best, one.x_adv)
  np.testing.assert_array_equal(st.loss < 0, one.success)
  np.testing.assert_array_equal(st.queries, one.queries)
  assert 0 < int(np.sum(one.success)) < n      # a non-trivial run
  whole = jax.jit(lambda x: S.square_segment(f, x, y, **kw))(x)
  np.testing.assert_array_equal(whole.x_best, one.x_adv)


@pytest.mark.parametrize("norm,shape", CASES)
def test_rows_draw_their_own_random_numbers(norm, shape):
  """Rows ``ids`` of a batch of ``num_rows`` run on their own (in another
  order, one of them twice) = the same rows of the whole batch."""
  n = 24
  f, x, y, kw = _problem(2, 5, norm, shape, n)
  whole = jax.jit(lambda x: S.square_segment(f, x, y, **kw))(x)
  ids = np.array([7, 3, 19, 0, 3, 22])
  part = jax.jit(lambda x, y, ids: S.square_segment(
      f, x, y, ids=ids, num_rows=n, **kw))(x[ids], y[ids], jnp.asarray(ids))
  np.testing.assert_allclose(part.x_best, whole.x_best[ids], atol=1e-6)
  np.testing.assert_array_equal(part.loss < 0, whole.loss[ids] < 0)
  np.testing.assert_array_equal(part.queries, whole.queries[ids])


def test_bucket_sizes():
  got = [AA._bucket(n, 1000, 8) for n in (1, 5, 8, 9, 11, 17, 100, 139, 150,
                                          161, 193, 225, 256, 257)]
  assert got == [8, 8, 8, 10, 12, 20, 112, 160, 160, 192, 224, 256, 256,
                 320]
  assert AA._bucket(139, 150, 8) == 150 and AA._bucket(3, 1000, 1) == 4
  # a smaller bucket only once it halves the batch
  assert AA._rebucket(100, 160, 1000, 8) == 160
  assert AA._rebucket(70, 160, 1000, 8) == 80


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_host_square_with_compaction_equals_masked(norm, monkeypatch):
  """Host mode runs Square in segments and drops the inputs that succeeded
  (here the batch halves, so it is re-padded to a smaller size); masked
  mode runs it once on every input. Same inputs broken, same points."""
  n = 64
  f, x, y = linear(3, 4, n)
  kw = dict(eps=0.06 if norm == "linf" else 0.2, norm=norm,
            attacks=("square",), queries=200, bounds=(0.0, 1.0),
            rng=jax.random.PRNGKey(2))
  sizes = []
  seg = AA._host_square_segment

  def spy(fn, xs, *a, **k):
    sizes.append(xs.shape[0])
    return seg(fn, xs, *a, **k)

  monkeypatch.setattr(AA, "_host_square_segment", spy)
  host = A.autoattack(f, x, y, **kw)
  masked = jax.jit(lambda x, y: A.autoattack(f, x, y, mode="masked",
                                             **kw))(x, y)
  broke = int(np.sum(host.success))
  assert n // 2 < broke < n, broke
  assert sizes[0] == n and min(sizes) < n // 2, sizes   # re-padded smaller
  np.testing.assert_array_equal(host.success, masked.success)
  np.testing.assert_allclose(host.x_adv, masked.x_adv, atol=1e-6)
  A.check_adversarial(x, host.x_adv, kw["eps"], norm)
