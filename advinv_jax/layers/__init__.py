"""Invertible layers for fiRevNets (pure, jittable, NHWC float32).

Every layer is a frozen dataclass of static settings with::

  params = layer.init(rng, x)              # x: f32[B, H, W, C] (data-dependent init)
  y, logdet = layer.forward(params, x)     # logdet: f32[B] = log|det dy/dx|
  x = layer.inverse(params, y)
  x, logdet_inv = layer.inverse_with_logdet(params, y)   # logdet_inv = -logdet

``Chain(layers, reversible=True)`` computes gradients by reversible backprop
(recomputing activations with the inverse instead of storing them).
"""
from advinv_jax.layers._actnorm import ActNorm, actnorm_init
from advinv_jax.layers._base import Chain, Layer, count_params, map_batch_chunks
from advinv_jax.layers._conv import (COMPUTE_DTYPES, CONV3X3_IMPLS,
                                     MATMUL_DTYPES, conv1x1, conv3x3,
                                     default_conv3x3_impl, matmul_lowp,
                                     resolve_compute_dtype,
                                     resolve_conv3x3_impl)
from advinv_jax.layers._compute import (Compute, compute_defaults,
                                        validate_compute)
from advinv_jax.layers._coupling import (AFFINE_SCALES, COUPLINGS, Coupling,
                                         Subnet, SubnetSettings)
from advinv_jax.layers._dct import DCT2D, FixedAffine, dct_matrix
from advinv_jax.layers._downsample import Psi, Squeeze
from advinv_jax.layers._logit import (LogitTransform, alpha_for_widening,
                                      logit_image_bounds)
from advinv_jax.layers._permute import InvConv1x1, Reverse, Shuffle

__all__ = ["AFFINE_SCALES", "COUPLINGS", "Compute", "SubnetSettings",
           "compute_defaults", "validate_compute", "COMPUTE_DTYPES", "CONV3X3_IMPLS", "MATMUL_DTYPES", "ActNorm", "Chain", "Coupling", "DCT2D", "FixedAffine",
           "InvConv1x1", "Layer", "LogitTransform", "Psi", "Reverse", "Shuffle", "Squeeze",
           "Subnet", "actnorm_init", "alpha_for_widening", "conv1x1", "conv3x3", "count_params",
           "dct_matrix", "default_conv3x3_impl", "logit_image_bounds",
           "map_batch_chunks",
           "matmul_lowp", "resolve_compute_dtype",
           "resolve_conv3x3_impl"]
