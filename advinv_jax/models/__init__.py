"""Models: invertible fiRevNets and ordinary classifiers, built from configs.

Public API::

  model = build_model(config.model, input_shape=(H, W, C), num_classes=C)
  params = model.init(rng, x)                # x: f32[B, H, W, C]
  logits = model.logits(params, x)           # f32[B, C]
  # invertible models (model.invertible is True) also have
  z, logdet = model.forward(params, x)       # f32[B, d], f32[B]
  x = model.inverse(params, z)
  z_s, z_n = model.split(z); z = model.merge(z_s, z_n)
  # config.model.compute.batch_chunk = k > 0: the same model run on chunks
  # of <= k examples (BatchChunkedModel; faster on CPU for large batches)
"""
from advinv_jax.models._base import (BatchChunkedModel, InvertibleModel,
                                     Model, batch_chunked, build_model,
                                     default_batch_chunk, map_batch_chunks,
                                     model_names, model_sections,
                                     register_model)
from advinv_jax.models._settings import (model_defaults, nest_model_fields,
                                         register_model_section,
                                         validate_model_config)
from advinv_jax.models import _firevnet_settings  # noqa: F401  (their sections)
from advinv_jax.models import _classifiers  # noqa: F401  (registers cnn, mlp)
from advinv_jax.models._classifiers import MLP, mlp_classifier
from advinv_jax.models import _firevnet  # noqa: F401  (registers firevnet, firevnet_imagenet)

__all__ = ["MODEL_SECTIONS", "BatchChunkedModel", "InvertibleModel", "MLP", "Model",
           "batch_chunked", "mlp_classifier",
           "default_batch_chunk",
           "build_model", "map_batch_chunks", "model_defaults",
           "model_names", "model_sections", "nest_model_fields",
           "register_model", "register_model_section",
           "validate_model_config"]

# {model name: the sub-sections of config.model it reads} (besides
# config.model.compute, which every model reads).
MODEL_SECTIONS = model_sections()
