"""Square Attack (Andriushchenko et al., ECCV 2020): score-based random
search, linf and l2, no gradients."""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax.attacks import _common as C

Array = jax.Array


def p_schedule(i: Array, queries: int, p_init: float) -> Array:
  """The fraction of features a proposal changes at iteration ``i``.

  The authors' piecewise-constant schedule for 10000 queries (``p_init``
  halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000),
  rescaled to ``queries`` as in their code (``i -> int(i / queries *
  10000)``).
  """
  it = jnp.floor(i * (10000.0 / queries))
  edges = jnp.asarray([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000],
                      jnp.float32)
  halvings = jnp.sum(it > edges)
  return p_init / (2.0 ** halvings)


def validate_square(queries, p_init) -> None:
  if int(queries) != queries or queries < 1:
    raise ValueError(f"queries={queries} must be a positive integer (the "
                     "query budget per example; AutoAttack: 5000).")
  if not 0.0 < float(p_init) <= 1.0:
    raise ValueError(f"p_init={p_init} must lie in (0, 1] (AutoAttack: 0.8).")


def _ring_table(n: int) -> np.ndarray:
  """``T[m] = sum_{c < m} 1 / (c + 1)^2`` for the square rings of eta."""
  return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 2) ** 2)])


def _eta_rect(a, b, rows, cols, table, xp=jnp):
  """The authors' ``eta_rectangles(rows, cols)`` at cell ``(a, b)``: the sum
  of ``1 / (c + 1)^2`` over the nested rectangles (rings ``c = m ..
  max(rows_c, cols_c) - 1``, ``rows_c = rows // 2 + 1``) that contain the
  cell, ``m`` its Chebyshev distance from the centre. Unnormalised; sizes
  may be traced."""
  rc, cc = rows // 2 + 1, cols // 2 + 1
  m = xp.maximum(xp.abs(a - (rc - 1)), xp.abs(b - (cc - 1)))
  top = xp.maximum(rc, cc)
  inside = (a >= 0) & (a < rows) & (b >= 0) & (b < cols)
  return xp.where(inside, table[top] - table[xp.minimum(m, top)], 0.0)


def _eta(a, b, s, table, transpose, xp=jnp):
  """The authors' ``meta_pseudo_gaussian_pert(s)`` at in-window offsets
  ``(a, b)`` (0 <= a, b < s): ``+eta_rect`` on the top ``s // 2`` rows,
  ``-eta_rect`` on the rest, normalised to unit l2 norm over the window;
  transposed when ``transpose``. ``s`` may be traced."""
  a, b = xp.where(transpose, b, a), xp.where(transpose, a, b)
  h1 = s // 2
  top = _eta_rect(a, b, h1, s, table, xp)
  bot = -_eta_rect(a - h1, b, s - h1, s, table, xp)
  return xp.where(a < h1, top, bot)


def _start_patterns(hh: int, ww: int) -> np.ndarray:
  """The l2 start's blocks, ``f32[nb_h, nb_w, H, W]``: block ``(i, j)`` is
  ``eta`` of side ``blk = max(H // 5, 1)`` at its place in the centred
  5x5 tiling, unit l2 norm (static: computed once, in numpy)."""
  table = _ring_table(max(hh, ww) + 2)
  blk = max(hh // 5, 1)
  start = max((hh - blk * 5) // 2, 0)
  nb_h, nb_w = min(hh // blk, 5), min(ww // blk, 5)
  rows, cols = np.arange(hh)[:, None], np.arange(ww)[None, :]
  out = np.zeros((nb_h, nb_w, hh, ww), np.float64)
  for i in range(nb_h):
    for j in range(nb_w):
      a, bb = rows - (start + i * blk), cols - (start + j * blk)
      inwin = (a >= 0) & (a < blk) & (bb >= 0) & (bb < blk)
      pat = np.where(inwin, _eta(a, bb, blk, table, False, np), 0.0)
      out[i, j] = pat / np.sqrt(max(np.sum(pat ** 2), 1e-24))
  return out.astype(np.float32)


def square(logits_fn: C.LogitsFn, x: Array, y: Array, *, eps,
           norm: str = "linf", queries: int = 5000, p_init: float = 0.8,
           bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
           rng: Optional[Array] = None) -> C.AttackResult:
  """Square Attack: score-based random search (Andriushchenko et al. 2020).

  Minimises the margin ``L = z_y - max_{j != y} z_j`` with forwards only (no
  gradients: the check that gradient masking cannot fool). Start: vertical
  stripes ``x + eps * s`` with one random sign ``s`` per column and channel
  (linf), or a tiling of 5x5 blocks of the pseudo-Gaussian pattern ``eta``
  rescaled to ``||delta||_2 = eps`` (l2). Each iteration ``i`` proposes a
  change of a random square window of side ``w = round(sqrt(p_i * H * W))``
  (:func:`p_schedule` gives ``p_i``; one window position per iteration,
  shared by the batch as in the authors' code):

  * linf: the window is set to ``x + eps * s_c`` (a random sign per example
    and channel), clipped to the ball and the box;
  * l2: the perturbation's mass in a second random window moves into the
    first, as ``eta`` with a random sign per channel plus the window's old
    direction, rescaled so that ``||delta||_2`` stays ``eps``.

  A proposal is kept per example when it lowers ``L``. Examples stop (and
  stop counting queries) once ``L < 0``; the loop (``lax.while_loop``) exits
  when every example succeeded or after ``queries - 1`` iterations. Cost:
  at most ``queries`` forwards per example.

  Per-example shapes: ``[B, H, W, C]`` images with ``min(H, W) >= 2`` use
  square windows. Any other shape (vectors ``[B, D]``, ...) is flattened to
  ``[B, D]`` and a window is a random subset of ``max(1, round(p_i D))``
  coordinates: linf sets them to ``x + eps * s`` with an independent random
  sign per coordinate; l2 adds a Gaussian step of length ``sqrt(p_i) *
  eps`` on them and rescales ``delta`` to ``||delta||_2 = eps`` (a (1+1)
  random search on the sphere whose step shrinks with the schedule). Without
  spatial structure a square has no meaning; the subset keeps the
  schedule's share of changed features. (The image l2 proposal moves whole
  windows of mass and cannot refine a direction finer than its window: on
  4x4 images it stalled a few percent short of the exact distance of a
  linear model.)

  Random numbers: iteration ``i`` draws all of its random numbers at once,
  from ``fold_in(key, i)``, and each example's signs (normals) are those of
  its row, so an example's trajectory does not depend on the others in its
  batch, and a run split into segments (:func:`square_segment`, as
  host-mode :func:`autoattack` runs it, dropping finished examples between
  segments) gives the same result bitwise. The window corners are uniform
  (the bits modulo the range; a bias below ``2^-24``), the vector subsets
  are the coordinates whose random keys are at most the ``k``-th smallest.

  Deviations from the authors' code, ours: a linf proposal that changes
  nothing is not resampled (it costs a query); the l2 window is at least
  ``min(3, H - 1)`` wide, odd where the image allows.

  Args:
    logits_fn: pure ``f32[B, ...] -> f32[B, K]``, per-example.
    x: ``f32[B, ...]`` clean inputs inside ``bounds``.
    y: ``int[B]`` true labels, in ``[0, K)``.
    eps: ball radius, a scalar or per-example ``f32[B]`` (>= 0).
    norm: ``'linf'`` or ``'l2'``.
    queries: the query budget per example (AutoAttack: 5000).
    p_init: initial fraction of changed features (AutoAttack: 0.8).
    bounds: ``(low, high)`` box, or None.
    rng: PRNG key (required).

  Returns:
    :class:`AttackResult` with ``x_adv f32[B, ...]`` (the lowest-margin
    point), ``success bool[B]`` (``argmax != y`` there, from its forward),
    ``perturbation_norm f32[B]``, ``bad_grad_steps`` zeros,
    ``queries int32[B]`` (forwards spent per example, including the start)
    and ``flagged bool[B]`` (invalid inputs under ``jit``, as :func:`apgd`;
    no queries).

  Raises:
    ValueError: bad shapes, labels (not integers, or outside ``[0, K)``),
      ``eps < 0``, unknown norm, ``queries <
      1``, ``p_init`` outside (0, 1], a missing ``rng``.
  """
  validate_square(queries, p_init)
  if rng is None:
    raise ValueError("rng is None: square is a random search; pass a key, "
                     "e.g. rng=jax.random.PRNGKey(0).")
  # Traced invalid inputs (see apgd) are not attacked but flagged.
  p = C.prologue(logits_fn, x, y, eps=eps, norm=norm, bounds=bounds)
  invalid = p.invalid
  st = square_segment(p.logits_fn, x, p.y, eps=p.eps, norm=norm,
                      queries=queries, p_init=p_init, bounds=p.bounds,
                      rng=rng)
  xa = st.x_best
  return C.flag_invalid(C.AttackResult(
      x_adv=xa, success=st.loss < 0,
      perturbation_norm=C.batch_norm(xa - x, norm),
      bad_grad_steps=jnp.zeros((x.shape[0],), jnp.int32), queries=st.queries),
                        x, invalid)


class SquareState(NamedTuple):
  """Square's loop state between segments (see :func:`square_segment`).

  Attributes:
    step: ``int32[]`` iterations done (the next iteration's index).
    x_best: ``f32[B, ...]`` the lowest-margin point per example.
    loss: ``f32[B]`` its margin ``z_y - max_{j != y} z_j`` (< 0: success).
    queries: ``int32[B]`` forwards spent per example, including the start.
  """
  step: Array
  x_best: Array
  loss: Array
  queries: Array


def square_segment(logits_fn: C.LogitsFn, x: Array, y: Array, *, eps,
                   norm: str = "linf", queries: int = 5000,
                   p_init: float = 0.8,
                   bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
                   rng: Array, state: Optional[SquareState] = None,
                   stop=None, ids: Optional[Array] = None,
                   num_rows: Optional[int] = None) -> SquareState:
  """Iterations ``state.step .. stop - 1`` of :func:`square` (no input
  checks: the caller validated; ``bounds`` as :func:`C.as_bounds` returns;
  the logits are taken in float32, :func:`C.float32_logits`).

  ``state=None`` starts (the start point and its query), and so does a
  ``state`` whose ``step`` is 0 (its arrays are placeholders: one compiled
  program serves every segment); ``stop=None`` runs to the end (``queries -
  1`` iterations). Running ``[0, s)`` and then
  ``[s, queries - 1)`` from the returned state gives what one run gives,
  bitwise: iteration ``i`` draws its random numbers from ``fold_in(key,
  i)`` and uses the schedule at ``i``. Per-example random numbers are drawn
  for ``num_rows`` rows (default ``B``) and row ``r`` uses those of row
  ``ids[r]`` (default ``r``), so an example's trajectory does not depend on
  which other examples share its batch: host-mode AutoAttack drops the
  finished examples between segments and re-pads the rest (``ids`` = their
  rows in the full batch) without changing the result of any example. The
  loop also stops once every row succeeded.
  """
  shape = x.shape
  image = x.ndim == 4 and min(shape[1], shape[2]) >= 2
  xf = x if image else x.reshape((shape[0], -1))
  if state is not None:
    state = state._replace(x_best=state.x_best.reshape(xf.shape))
  logits_fn = C.float32_logits(logits_fn)
  st = _square_run(lambda v: logits_fn(v.reshape(shape)), xf, y,
                   jnp.asarray(eps, x.dtype), norm=norm, queries=int(queries),
                   p_init=float(p_init), bounds=bounds, rng=rng, image=image,
                   state=state, stop=stop, ids=ids,
                   num_rows=shape[0] if num_rows is None else int(num_rows))
  return st._replace(x_best=st.x_best.reshape(shape))


def _sign_bits(bits, dt):
  """+-1 from the top bit of ``uint32`` bits (Rademacher signs)."""
  return jnp.where((bits >> 31) == 1, 1.0, -1.0).astype(dt)


def _normal_bits(bits, dt):
  """Standard normals from ``uint32`` bits: 23 bits to a uniform in [0, 1),
  then the inverse CDF (the map :func:`jax.random.normal` uses)."""
  u = jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000),
                                   jnp.float32) - 1.0
  v = jnp.maximum(2.0 * u - 1.0, np.nextafter(np.float32(-1), np.float32(0)))
  return (np.sqrt(2.0) * jax.scipy.special.erfinv(v)).astype(dt)


class _Run(NamedTuple):
  """One run's constants, shared by its start, its proposals and its loop:
  the inputs ``x f32[B, ...]`` and labels, the radius (``eps``, and ``e``
  broadcast to ``x``), the box, the layout (images ``[B, H, W, C]``, or
  vectors ``[B, D]``) and the sizes of the one random draw per iteration
  (``n_shared`` bits shared by the batch, then ``row_shape`` per row of the
  ``num_rows`` drawn; ``ids`` picks this batch's rows)."""
  x: Array
  y: Array
  eps: Array
  e: Array
  lo: float
  hi: float
  norm: str
  queries: int
  p_init: float
  image: bool
  ids: Optional[Array]
  num_rows: int
  key: Array
  hwc: Tuple[int, int, int]         # images: (H, W, C); vectors: (0, 0, 0)
  n_feat: int
  n_shared: int
  row_shape: Tuple[int, ...]
  table: Optional[Array]            # images: _ring_table for the l2 windows

  def clip(self, v):
    return jnp.clip(v, self.lo, self.hi)

  def rows_of(self, v):
    """Per-example draws made for ``num_rows`` rows -> this batch's rows."""
    return v if self.ids is None else jnp.take(v, self.ids, axis=0)

  def l2_to_ball(self, delta):
    n = jnp.maximum(C.batch_norm(delta, "l2"), 1e-12)
    return delta * C._bcast(self.eps / n, delta)


def _start(r: _Run, f, k0):
  """The initial point (vertical stripes for linf images, the reference's
  nested squares for l2 images, random signs for vectors) and its score."""
  x, dt, (hh, ww, cc) = r.x, r.x.dtype, r.hwc
  if r.image and r.norm == "linf":
    s = r.rows_of(jax.random.rademacher(k0, (r.num_rows, 1, ww, cc), dt))
    x_best = r.clip(x + r.e * s)
  elif r.image:
    pats = _start_patterns(hh, ww)                  # [nb_h, nb_w, H, W]
    s = r.rows_of(jax.random.rademacher(
        k0, (r.num_rows,) + pats.shape[:2] + (cc,), dt))
    delta = jnp.einsum("ijhw,bijc->bhwc", jnp.asarray(pats, dt), s,
                       precision=jax.lax.Precision.HIGHEST)
    x_best = r.clip(x + r.l2_to_ball(delta))
  else:
    s = r.rows_of(jax.random.rademacher(k0, (r.num_rows,) + x.shape[1:], dt))
    x_best = r.clip(x + (r.e * s if r.norm == "linf" else r.l2_to_ball(s)))
  return (jnp.int32(0), x_best, _score(f, x_best, r.y),
          jnp.ones((x.shape[0],), jnp.int32))


def _score(f, v, y):
  """``z_y - max_{j != y} z_j`` at ``v``: the margin the search lowers."""
  return -C.margin(f(v), y)


def _windows(r: _Run, i):
  """Masks ``[1, ...]`` (shared by the batch) of the changed window(s)
  and the ``[B, ...]`` pattern in the first. One draw of random bits per
  iteration, from ``fold_in(key, i)``."""
  x, dt, (hh, ww, cc) = r.x, r.x.dtype, r.hwc
  n_feat, n_shared = r.n_feat, r.n_shared
  p = p_schedule(i.astype(jnp.float32), r.queries, r.p_init)
  n_bits = n_shared + r.num_rows * int(np.prod(r.row_shape))
  bits = jax.random.bits(jax.random.fold_in(r.key, i), (n_bits,), jnp.uint32)
  per_row = r.rows_of(bits[n_shared:].reshape((r.num_rows,) + r.row_shape))
  if r.image:
    rows = jnp.arange(hh)[:, None]
    cols = jnp.arange(ww)[None, :]
    side = jnp.sqrt(p * n_feat / cc)
    w = jnp.maximum(jnp.round(side), 1.0).astype(jnp.int32)
    w = jnp.minimum(w, min(hh, ww) - 1)
    if r.norm == "l2":
      w = jnp.maximum(w, min(3, min(hh, ww) - 1))
      w = jnp.where((w % 2 == 0) & (w + 1 <= min(hh, ww) - 1), w + 1, w)
    # uniform corners (the modulo's bias is < 2^-24 for these ranges)
    vh = (bits[0:2] % (hh - w + 1).astype(jnp.uint32)).astype(jnp.int32)
    vw = (bits[2:4] % (ww - w + 1).astype(jnp.uint32)).astype(jnp.int32)
    a1, b1 = rows - vh[0], cols - vw[0]
    m1 = (a1 >= 0) & (a1 < w) & (b1 >= 0) & (b1 < w)
    a2, b2 = rows - vh[1], cols - vw[1]
    m2 = (a2 >= 0) & (a2 < w) & (b2 >= 0) & (b2 < w)
    sign = _sign_bits(per_row, dt)                       # [B, 1, 1, C]
    if r.norm == "linf":
      pat = jnp.broadcast_to(sign, x.shape)
    else:
      tr = (bits[4] >> 31) == 1
      eta = jnp.where(m1, _eta(a1, b1, w, r.table, tr), 0.0)
      eta = eta / jnp.sqrt(jnp.maximum(jnp.sum(eta ** 2), 1e-24))
      pat = eta[None, :, :, None] * sign
    return m1[None, :, :, None], m2[None, :, :, None], pat
  # Two random subsets of k coordinates: those whose key is at most the
  # k-th smallest (one sort for both).
  k = jnp.clip(jnp.round(p * n_feat), 1, n_feat).astype(jnp.int32)
  bits_r = bits[:n_shared].reshape((2, n_feat))
  th = jax.lax.dynamic_index_in_dim(jnp.sort(bits_r, axis=1), k - 1, axis=1)
  m1, m2 = bits_r[0] <= th[0], bits_r[1] <= th[1]
  if r.norm == "linf":
    pat = _sign_bits(per_row, dt)
  else:
    # l2 on vectors: a Gaussian step on the subset, of l2 length
    # sqrt(p) * eps (see the docstring).
    u = jnp.where(m1[None], _normal_bits(per_row, dt), 0.0)
    u = u / jnp.maximum(C.batch_norm(u, "l2"), 1e-12)[:, None]
    pat = u * jnp.sqrt(p) * r.e
  return m1[None], m2[None], pat


def _chan_norm(r: _Run, v, mask):
  """l2 norm over the window per example and channel (images) or over the
  subset (vectors), broadcast back."""
  axes = (1, 2) if r.image else (1,)
  return jnp.sqrt(jnp.sum(jnp.where(mask, v, 0.0) ** 2, axis=axes,
                          keepdims=True))


def _propose(r: _Run, i, x_best):
  """The candidate of iteration ``i`` from the current best point."""
  x, e, cc = r.x, r.e, r.hwc[2]
  m1, m2, pat = _windows(r, i)
  delta = x_best - x
  if r.norm == "linf":
    x_new = jnp.where(m1, x + e * pat, x_best)
    return r.clip(jnp.clip(x_new, x - e, x + e))
  if not r.image:
    return r.clip(x + r.l2_to_ball(delta + pat))
  n1 = _chan_norm(r, delta, m1)
  n_img = C._bcast(C.batch_norm(delta, "l2"), x)
  n_win = _chan_norm(r, delta, m1 | m2)
  new = pat + jnp.where(m1, delta, 0.0) / (n1 + 1e-12)
  new = new / (_chan_norm(r, new, m1) + 1e-12) * jnp.sqrt(
      jnp.maximum(e ** 2 - n_img ** 2, 0.0) / cc + n_win ** 2)
  delta = jnp.where(m2, 0.0, delta)
  delta = jnp.where(m1, new, delta)
  return r.clip(x + r.l2_to_ball(delta))


def _square_run(f, x, y, eps, *, norm, queries, p_init, bounds, rng, image,
                state, stop, ids, num_rows):
  """The search from ``state`` (None or step 0: the start) until step
  ``stop`` (None: the last query) or until every example is broken."""
  lo, hi = (-jnp.inf, jnp.inf) if bounds is None else bounds
  if image:
    hwc = tuple(x.shape[1:])
    n_feat = int(np.prod(hwc))
    table = jnp.asarray(_ring_table(max(hwc[0], hwc[1]) + 2), x.dtype)
    # per iteration: 2 + 2 window corners, the l2 transpose bit; then a sign
    # per example and channel
    n_shared, row_shape = 5, (1, 1, hwc[2])
  else:
    hwc, n_feat, table = (0, 0, 0), x.shape[1], None
    # per iteration: two random keys per coordinate (the two subsets); then
    # a sign (linf) or a normal (l2) per example and coordinate
    n_shared, row_shape = 2 * n_feat, (n_feat,)
  k0, key = jax.random.split(rng)
  r = _Run(x=x, y=y, eps=eps, e=C.eps_like(eps, x), lo=lo, hi=hi, norm=norm,
           queries=queries, p_init=p_init, image=image, ids=ids,
           num_rows=num_rows, key=key, hwc=hwc, n_feat=n_feat,
           n_shared=n_shared, row_shape=row_shape, table=table)

  if state is None:
    state = _start(r, f, k0)
  else:
    # A given state at step 0 (host mode's first segment) is replaced by
    # the start.
    step = jnp.asarray(state.step, jnp.int32)
    state = jax.lax.cond(
        step == 0, lambda: _start(r, f, k0),
        lambda: (step, state.x_best, state.loss, state.queries))
  stop = queries - 1 if stop is None else jnp.minimum(stop, queries - 1)

  def cond(s):
    i, _, loss, _ = s
    return (i < stop) & jnp.any(loss >= 0)

  def body(s):
    i, x_best, loss, qn = s
    active = loss >= 0
    x_new = _propose(r, i, x_best)
    new_loss = _score(f, x_new, y)
    keep = active & (new_loss < loss)
    return (i + 1, C.select(keep, x_new, x_best),
            jnp.where(keep, new_loss, loss), qn + active.astype(jnp.int32))

  return SquareState(*jax.lax.while_loop(cond, body, state))
