"""The config: every component's section, assembled.

Each component owns its settings next to its builder -- defaults (the only
place a field's default is set), choices and checks -- and registers them
(``advinv_jax/_settings.py``):

* ``config.seed``, ``config.optimizer``, ``config.train``, ``config.eval``:
  ``advinv_jax/train/_settings.py``;
* ``config.data``: ``advinv_jax/data/_settings.py`` (its checks:
  ``data/_load.py``);
* ``config.model``: ``advinv_jax/models/_settings.py``, each architecture's
  sub-section next to its builder (``models/_firevnet_settings.py``,
  ``models/_classifiers.py``), ``config.model.compute`` in
  ``advinv_jax/layers/_compute.py``;
* ``config.loss``: ``advinv_jax/losses/_settings.py``;
* ``config.report``: ``advinv_jax/attacks/_settings.py``.

``default_config()`` is the schema of the project: every experiment config
in ``configs/`` starts from it and only changes values. A field that is not
in it (a misspelling, say) is rejected by :func:`validate_config` with one
clear line, before any data is loaded or anything is compiled; so is a value
of the wrong type or out of range.
"""
from __future__ import annotations

# Every component whose settings make up the config (importing a component
# registers its sections; training imports the ones below it).
from advinv_jax import data, layers, losses, models, train  # noqa: F401
from advinv_jax._settings import (ConfigError, closest_field,  # noqa: F401
                                  config_section, default_config,
                                  migrate_config, validate_config)
from advinv_jax.attacks._settings import REPORT_FULL  # noqa: F401
from advinv_jax.models import (MODEL_SECTIONS, nest_model_fields,  # noqa: F401
                               validate_model_config)

__all__ = ["ConfigError", "MODEL_SECTIONS", "REPORT_FULL", "closest_field",
           "config_section", "default_config", "migrate_config",
           "nest_model_fields", "validate_config", "validate_model_config"]
