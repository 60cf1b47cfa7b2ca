"""PyTorch version of our fiRevNet iCE training step (benchmarks only).

Used by ``benchmarks/reversible.py --torch_train_step`` to time a PyTorch
step next to our jitted ``train.make_train_step`` in the same interleaved
rounds (the host's speed drifts by 25-40% between runs, so a PyTorch figure
measured once, at another time, is no fair yardstick)::

  step = make_torch_ice_step(cfg, model, params, batch_size)
  loss = step()          # one training step on a fixed random batch

The step does the work of ours for the same config (``config.loss.name =
'ice'``, ``minmax = 'alternating'``), on the fiRevNet ported by
``benchmarks/_torch_firevnet.py`` (``forward_full``: ``z`` and ``logdet``
equal to ``model.forward``):

1. dequantisation noise ``x + dequant_noise * U(0, 1)``;
2. the forward of the whole network, ``(z, logdet)``, with autograd on the
   network's parameters;
3. ``loss.ice.nuisance_steps`` updates of the nuisance classifier (an MLP
   ``d - K -> nuisance_hidden -> K`` with ReLUs, our initial weights) on
   ``z_n.detach()``, with ``loss.ice.nuisance_optimizer`` (``torch.optim``
   Adamax / Adam / SGD) at ``nuisance_learning_rate``;
4. our network loss, ``w_s CE(z_s) - w_n CE(D(z_n)) + w_m mean(NLL)`` with
   ``NLL = (-log N(z_n; mean, exp(log_std)) - logdet) / (d ln 2)`` (bits/dim
   when ``loss.ice.mle_bits_per_dim``, else nats), the classifier ``D``
   held fixed (gradients reach ``z_n`` only), the prior's ``mean`` and
   ``log_std`` trained with the network;
5. backward, the global gradient norm and the non-finite guard (the update is
   skipped when the norm or the loss is not finite), optional gradient
   clipping, then ``config.optimizer`` (Adamax / Adam / AdamW / SGD from
   ``torch.optim``, same hyper-parameters as optax's) on the network and prior
   parameters, and the norm of the updated parameters (our guard's second
   check).

Where the work differs from ours (none of it is cheaply mirrorable, or it
would change what is timed):

* Ours and this step run ONE forward of the network: its ``z_n`` (gradient
  stopped / ``detach()``ed) feeds the classifier updates, and the same
  forward is differentiated for the network's loss (the network has not
  changed yet, so these are the values of a second forward).
  ``separate_aux_forward=True`` runs a literal extra forward under
  ``torch.no_grad()`` here.
* ``config.model.compute.reversible`` (on in the benchmark's train-step rows) makes
  our backward recompute every coupling's input by inversion instead of
  storing activations; PyTorch's autograd stores them (like the authors'
  PyTorch code: more memory, one subnet forward per coupling less).
  ``batch_chunk`` and ``conv3x3_impl`` likewise change only how ours
  computes; the PyTorch step runs the whole batch through ``F.conv2d``.
* The learning rate is held at ``config.optimizer.learning_rate`` (a
  schedule changes the values, not the work).
* Our guard keeps the old state (``jnp.where``) when the updated parameters
  are not finite; here their norm is computed but a bad update is not rolled
  back (with finite gradients, Adam-type updates are bounded by ~lr per
  entry). ``config.train.trainable`` (frozen parameters) is not supported.
* Random numbers (the noise) come from torch's generator, not JAX's; our
  benchmark reuses one fixed key, this step draws fresh noise every call
  (the same work).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._torch_firevnet import make_torch_firevnet, perturb_params

__all__ = ["TorchIceStep", "check_ice_step", "make_torch_ice_step"]

_LOG_2PI = math.log(2.0 * math.pi)
_LN2 = math.log(2.0)


def _np(a):
  return np.array(a, dtype=np.float32)


class _MLP(torch.nn.Module):
  """The nuisance classifier (our flax ``_MLP``): Dense -> ReLU ... -> Dense."""

  def __init__(self, nc_params):
    super().__init__()
    names = sorted(nc_params, key=lambda n: int(n.rsplit("_", 1)[-1]))
    layers = []
    for name in names:
      kernel = _np(nc_params[name]["kernel"])                 # [in, out]
      lin = torch.nn.Linear(*kernel.shape)
      with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(kernel.T.copy()))
        lin.bias.copy_(torch.from_numpy(_np(nc_params[name]["bias"])))
      layers.append(lin)
    self.layers = torch.nn.ModuleList(layers)

  def forward(self, x, detach_params=False):
    """``detach_params``: no gradient reaches the weights (``D`` held fixed
    in the network loss), only ``x``."""
    x = x.reshape(x.shape[0], -1)
    last = len(self.layers) - 1
    for i, lin in enumerate(self.layers):
      w, b = lin.weight, lin.bias
      if detach_params:
        w, b = w.detach(), b.detach()
      x = F.linear(x, w, b)
      if i < last:
        x = F.relu(x)
    return x


def _optimizer(name, params, lr, momentum=0.0, weight_decay=0.0):
  """``torch.optim`` twin of our optax optimiser ``name`` (same defaults:
  betas (0.9, 0.999), eps 1e-8; ``weight_decay`` is optax's
  ``add_decayed_weights`` before the optimiser, AdamW's decoupled one)."""
  if name == "adamax":
    return torch.optim.Adamax(params, lr, betas=(0.9, 0.999), eps=1e-8,
                              weight_decay=weight_decay)
  if name == "adam":
    return torch.optim.Adam(params, lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=weight_decay)
  if name == "adamw":
    return torch.optim.AdamW(params, lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=weight_decay)
  if name == "sgd":
    return torch.optim.SGD(params, lr, momentum=momentum,
                           weight_decay=weight_decay)
  raise ValueError(f"optimizer {name!r}: no torch.optim twin (adam | adamw | "
                   "adamax | sgd).")


def _accuracy(logits, labels):
  return torch.mean((torch.argmax(logits, -1) == labels).float())


class TorchIceStep:
  """One PyTorch iCE training step per call (see the module docstring).

  Build it with :func:`make_torch_ice_step`. Calling it runs a step on the
  fixed batch ``self.x`` (NCHW), ``self.y`` and returns the loss (a Python
  float); :meth:`step` returns all metrics.

  Attributes:
    net: the fiRevNet (``TorchFiRevNet``, trainable).
    prior_mean, prior_log_std: the factorial Gaussian prior of ``z_n``.
    nc: the nuisance classifier.
    opt, nc_opt: the network's and the classifier's optimisers.
    skipped: steps whose update was skipped (non-finite loss or gradient).
  """

  def __init__(self, cfg, model, params, x, y, loss_params, nc_params,
               separate_aux_forward=False, seed=0, device="cpu"):
    ice = cfg.loss.ice
    if cfg.loss.name != "ice" or ice.minmax != "alternating":
      raise ValueError("make_torch_ice_step mirrors the iCE step with "
                       "loss.minmax='alternating', got loss.name="
                       f"{cfg.loss.name!r}, minmax={ice.minmax!r}.")
    if cfg.train.get("trainable", ""):
      raise ValueError("make_torch_ice_step: config.train.trainable (frozen "
                       "parameters) is not mirrored; leave it ''.")
    self.num_classes = model.num_classes
    self.k = int(ice.nuisance_steps)
    self.weights = (float(ice.semantic_weight), float(ice.nuisance_weight),
                    float(ice.mle_weight))
    self.bits_dim = (math.prod(model.input_shape) if ice.mle_bits_per_dim
                     else None)
    self.dequant_noise = float(cfg.train.dequant_noise)
    self.separate_aux_forward = bool(separate_aux_forward)
    self.net = make_torch_firevnet(model, params, trainable=True).train().to(
        device)
    self.prior_mean = torch.nn.Parameter(torch.tensor(_np(
        loss_params["prior"]["mean"]), device=device))
    self.prior_log_std = torch.nn.Parameter(torch.tensor(_np(
        loss_params["prior"]["log_std"]), device=device))
    self.params = list(self.net.parameters()) + [self.prior_mean,
                                                 self.prior_log_std]
    o = cfg.optimizer
    self.opt = _optimizer(o.name, self.params, float(o.learning_rate),
                          momentum=float(o.get("momentum", 0.0) or 0.0)
                          if o.name == "sgd" else 0.0,
                          weight_decay=float(o.get("weight_decay", 0.0)))
    self.grad_clip_norm = float(o.get("grad_clip_norm", 0.0))
    self.nc = _MLP(nc_params).to(device)
    self.nc_opt = _optimizer(ice.nuisance_optimizer, self.nc.parameters(),
                             float(ice.nuisance_learning_rate))
    self.x, self.y = x.to(device), y.to(device)
    self.gen = torch.Generator(device=device).manual_seed(seed)
    self.skipped = 0

  # ------------------------------------------------------------- pieces
  def forward(self, x):
    """``(z, logdet)`` of NCHW ``x`` (with autograd)."""
    return self.net.forward_full(x)

  def nuisance_updates(self, z_n, y):
    """``k`` classifier steps on ``z_n.detach()``; returns the loss at the
    start of the last step (at the current parameters when ``k = 0``)."""
    z_n = z_n.detach()
    if self.k == 0:
      with torch.no_grad():
        return F.cross_entropy(self.nc(z_n), y)
    last = None
    for _ in range(self.k):
      self.nc_opt.zero_grad(set_to_none=True)
      loss = F.cross_entropy(self.nc(z_n), y)
      loss.backward()
      self.nc_opt.step()
      last = loss.detach()
    return last

  def network_loss(self, z, logdet, y):
    """Our ``ice_network_loss`` on ``(z, logdet)``: ``(loss, metrics)``."""
    k = self.num_classes
    z_s, z_n = z[:, :k], z[:, k:]
    w_s, w_n, w_m = self.weights
    nc_logits = self.nc(z_n, detach_params=True)
    sce = F.cross_entropy(z_s, y)
    nce = F.cross_entropy(nc_logits, y)
    scaled = (z_n - self.prior_mean) * torch.exp(-self.prior_log_std)
    nll = torch.sum(0.5 * scaled * scaled + self.prior_log_std
                    + 0.5 * _LOG_2PI, dim=-1) - logdet
    if self.bits_dim is not None:
      nll = nll / (self.bits_dim * _LN2)
    mle = torch.mean(nll)
    loss = w_s * sce - w_n * nce + w_m * mle
    with torch.no_grad():
      metrics = {"loss": loss.detach(), "sce": sce.detach(),
                 "nce": nce.detach(), "mle": mle.detach(),
                 "accuracy": _accuracy(z_s, y),
                 "nuisance_accuracy": _accuracy(nc_logits, y)}
    return loss, metrics

  # ------------------------------------------------------------- the step
  def step(self, x=None, y=None, noise=None):
    """One training step; returns the metrics (Python floats).

    Args:
      x, y: NCHW images and int64 labels (default: the fixed batch).
      noise: the ``U(0, 1)`` dequantisation noise to use (NCHW; default:
        fresh from ``self.gen``); scaled by ``dequant_noise``.
    """
    x = self.x if x is None else x
    y = self.y if y is None else y
    if self.dequant_noise > 0:
      if noise is None:
        noise = torch.rand(x.shape, generator=self.gen, dtype=x.dtype,
                           device=x.device)
      x = x + self.dequant_noise * noise
    if self.separate_aux_forward:
      with torch.no_grad():
        z_aux, _ = self.forward(x)
    z, logdet = self.forward(x)
    nc_loss = self.nuisance_updates(
        (z if not self.separate_aux_forward else z_aux)[:, self.num_classes:],
        y)
    loss, metrics = self.network_loss(z, logdet, y)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in self.params if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads)
    finite = bool(torch.isfinite(grad_norm) and torch.isfinite(loss))
    if finite:
      if self.grad_clip_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(self.params, self.grad_clip_norm,
                                             grad_norm)
      self.opt.step()
      with torch.no_grad():
        finite = bool(torch.isfinite(
            torch.nn.utils.get_total_norm(self.params)))
    if not finite:
      self.skipped += 1
    out = {n: float(v) for n, v in metrics.items()}
    out.update(nuisance_classifier_loss=float(nc_loss),
               grad_norm=float(grad_norm), finite=float(finite))
    return out

  def __call__(self):
    return self.step()["loss"]


def make_torch_ice_step(cfg, model, params, batch_size=None, *, x=None,
                        y=None, loss_params=None, nc_params=None, seed=0,
                        separate_aux_forward=False, device="cpu"):
  """The PyTorch iCE training step of ``cfg`` on our fiRevNet ``model``.

  Args:
    cfg: the full library config (``loss.ice``, ``optimizer``,
      ``train.dequant_noise`` are read).
    model: the fiRevNet (``build_model(cfg.model, ...)``; a
      ``BatchChunkedModel`` is fine).
    params: its parameters (copied as float32, trainable).
    batch_size: the batch size of the random batch drawn when ``x`` is None.
    x: ``f32[B, H, W, C]`` NHWC images (e.g. our benchmark's batch), or None
      for ``U(0, 1)`` images from ``seed``.
    y: ``int[B]`` labels, or None for random ones from ``seed``.
    loss_params: our ``{"prior": {"mean", "log_std"}}`` (default: our init,
      zeros).
    nc_params: our nuisance classifier's flax parameters (default: our init,
      ``nuisance_classifier(cfg, model).init`` with ``PRNGKey(seed)``).
    seed: seeds the random batch, the classifier init and the noise.
    separate_aux_forward: run the classifier updates on a second, no-grad
      forward as our program is written (XLA merges it; see the module
      docstring).
    device: the torch device the step runs on (``'cuda'`` for a GPU).

  Returns:
    A :class:`TorchIceStep`; ``step()`` runs one training step.
  """
  d_n = model.latent_dim - model.num_classes
  if loss_params is None:
    loss_params = {"prior": {"mean": np.zeros(d_n, np.float32),
                             "log_std": np.zeros(d_n, np.float32)}}
  if nc_params is None:
    import jax  # pylint: disable=import-outside-toplevel
    from advinv_jax.train import nuisance_classifier  # noqa: E402
    nc_params = nuisance_classifier(cfg, model).init(
        jax.random.PRNGKey(seed), np.zeros((1, d_n, 1, 1), np.float32))
  gen = torch.Generator().manual_seed(seed)
  h, w, c = model.input_shape
  if x is None:
    if batch_size is None:
      raise ValueError("make_torch_ice_step: give batch_size or x.")
    xt = torch.rand((batch_size, c, h, w), generator=gen)
  else:
    xt = torch.tensor(_np(x).transpose(0, 3, 1, 2).copy())
  if y is None:
    yt = torch.randint(0, model.num_classes, (xt.shape[0],), generator=gen)
  else:
    yt = torch.tensor(np.asarray(y, np.int64))
  return TorchIceStep(cfg, model, params, xt, yt, loss_params, nc_params,
                      separate_aux_forward=separate_aux_forward, seed=seed,
                      device=device)


def check_ice_step(cfg, model, params, x, y, loss_params=None,
                   nc_params=None):
  """Compares one PyTorch step with our jitted ``train.make_train_step``.

  Both run on the same batch without dequantisation noise, from the same
  network, prior and nuisance-classifier parameters (our init for those not
  given), fresh optimiser states.

  Args:
    cfg: the library config (iCE, alternating).
    model, params: our fiRevNet and its parameters.
    x: ``f32[B, H, W, C]`` images; y: ``int[B]`` labels.
    loss_params, nc_params: as for :func:`make_torch_ice_step`.

  Returns:
    ``{name: (torch, jax, relative difference)}`` for ``loss_init`` (the
    network loss at the initial classifier, before its updates), the step's
    ``loss``, ``sce``, ``nce``, ``mle`` (after the ``k`` classifier updates,
    as in the step), ``nuisance_classifier_loss`` and ``grad_norm``; the
    relative difference is ``|torch - jax| / max(|jax|, 1e-6)``.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from advinv_jax import train  # pylint: disable=import-outside-toplevel

  objective = train.make_objective(cfg)
  optimizer = train.make_optimizer(cfg.optimizer, 1000)
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  if loss_params is None:
    loss_params = objective.init_loss_params(None, model, params, x)
  if nc_params is None:    # objective.init_aux's, without its eager forward
    d_n = model.latent_dim - model.num_classes
    nc_params = train.nuisance_classifier(cfg, model).init(
        jax.random.PRNGKey(0), jnp.zeros((1, d_n, 1, 1), jnp.float32))
  aux = {"params": nc_params,
         "opt_state": objective.aux_optimizer.init(nc_params)}
  batch = {"image": x, "label": y}
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, loss_params=loss_params,
      opt_state=optimizer.init({"model": params, "loss": loss_params}),
      aux=aux, skipped=jnp.zeros((), jnp.int32))
  train_step = train.make_train_step(model, objective, optimizer)

  # The loss at the initial classifier: the same objective with no
  # classifier steps (the iCE loss runs them itself, on its own forward).
  cfg0 = cfg.copy_and_resolve_references()
  cfg0.loss.ice.nuisance_steps = 0
  objective0 = train.make_objective(cfg0)

  @jax.jit
  def ours(state, batch):    # one program: one compile (most of the cost)
    loss0 = objective0.loss(model, state.params, state.loss_params,
                            state.aux, batch, None)[0]
    return loss0, train_step(state, batch, jax.random.PRNGKey(0))[1]

  jloss0, jm = ours(state, batch)

  step = make_torch_ice_step(cfg, model, params, x=np.asarray(x),
                             y=np.asarray(y), loss_params=loss_params,
                             nc_params=aux["params"])
  step.dequant_noise = 0.0
  z, logdet = step.forward(step.x)
  tloss0, _ = step.network_loss(z, logdet, step.y)
  tm = step.step()

  def one(t, j):
    t, j = float(t), float(j)
    return (t, j, abs(t - j) / max(abs(j), 1e-6))

  out = {"loss_init": one(tloss0.item(), jloss0)}
  for name in ("loss", "sce", "nce", "mle", "nuisance_classifier_loss",
               "grad_norm"):
    out[name] = one(tm[name], jm[name])
  return out


def _main():
  """Checks the step on a small config and the authors' (forward only)."""
  import jax  # pylint: disable=import-outside-toplevel
  from advinv_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from configs.mnist import mnist_firevnet  # pylint: disable=g-import-not-at-top

  cfg = mnist_firevnet(loss="ice")
  cfg.model.firevnet.depth, cfg.model.firevnet.width, cfg.model.compute.batch_chunk = 2, 16, 0
  shape = (32, 32, 1)
  model = build_model(cfg.model, shape, 10)
  x = jax.random.uniform(jax.random.PRNGKey(1), (8,) + shape)
  y = np.arange(8) % 10
  params = perturb_params(model.init(jax.random.PRNGKey(0), x),
                   jax.random.PRNGKey(2), 0.1)
  for name, (t, j, r) in check_ice_step(cfg, model, params, x, y).items():
    print(f"small iCE step {name}: torch {t:.6g} jax {j:.6g} (relative "
          f"{r:.2e})", flush=True)


if __name__ == "__main__":
  _main()
