"""Config sections: the registry each component's settings join, and the
helpers that complete and check them.

Every component owns its part of the config next to its builder: the data
loader ``config.data`` (``data/_settings.py``), the models ``config.model``
(each architecture its sub-section, ``models/``; how models run,
``config.model.compute``, ``layers/_compute.py``), the losses
``config.loss``, the report's attacks and probes ``config.report``
(``attacks/_settings.py``), training ``config.seed / optimizer / train /
eval`` (``train/_settings.py``). Each registers with
:func:`register_section` its defaults (the only place a field's default is
set), its validation (one :class:`ConfigError` naming the field and the
fix) and what older workdirs need to load (``value_before`` and
``migrate``). :func:`register_check` adds a rule that spans sections
(registered by the higher component of the two).

This module is the bottom of the package: it imports no other part of it,
so that any component may use it. ``advinv_jax/config.py`` imports every
component and so has the complete schema (``default_config``).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Callable, Dict, Iterable, List, Optional

import ml_collections

# The order of the sections in a config (and its config.json).
SECTION_ORDER = ("seed", "data", "model", "loss", "optimizer", "train",
                 "eval", "report")


class ConfigError(ValueError):
  """A config field is unknown, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class Section:
  """One top-level config entry, owned by a component.

  Attributes:
    name: its key in the config (``"data"``).
    defaults: ``() -> ConfigDict`` (a fresh one per call), or the default
      value of a scalar entry (``seed``).
    validate: ``(section) -> None`` raising :class:`ConfigError`; gets the
      completed, type-checked section.
    value_before: ``{dotted path below the section: value}`` for fields
      added after workdirs were written whose behaviour before they existed
      differs from today's default: the value that reproduces such a run.
    migrate: ``(raw dict) -> raw dict``: an older workdir's section in
      today's layout (renamed or moved fields).
  """
  name: str
  defaults: Any
  validate: Optional[Callable[[Any], None]] = None
  value_before: Dict[str, Any] = dataclasses.field(default_factory=dict)
  migrate: Optional[Callable[[dict], dict]] = None


_SECTIONS: Dict[str, Section] = {}
_CHECKS: List[Callable[[ml_collections.ConfigDict], None]] = []


def register_section(section: Section) -> Section:
  """Adds a component's section to the schema (once per name)."""
  if section.name in _SECTIONS:
    raise ValueError(f"config section {section.name!r} registered twice")
  _SECTIONS[section.name] = section
  return section


def register_check(fn):
  """Adds ``fn(config) -> None`` (raises :class:`ConfigError`), a rule
  between sections, run by :func:`validate` after every section's own."""
  _CHECKS.append(fn)
  return fn


def _ordered() -> List[Section]:
  rank = {n: i for i, n in enumerate(SECTION_ORDER)}
  return sorted(_SECTIONS.values(),
                key=lambda s: (rank.get(s.name, len(rank)), s.name))


def _default(section: Section):
  return section.defaults() if callable(section.defaults) else section.defaults


def default_config() -> ml_collections.ConfigDict:
  """Every registered section with its defaults: the schema, complete once
  every component is imported (``advinv_jax/config.py`` imports them all;
  so does training, for the sections below it)."""
  config = ml_collections.ConfigDict()
  for s in _ordered():
    config[s.name] = _default(s)
  return config


# ------------------------------------------------------------------ fields
def walk(cfg, prefix: str = ""):
  """``(dotted path, value)`` of every leaf field of ``cfg``."""
  for key in cfg.keys():
    value = cfg[key]
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from walk(value, path + ".")
    else:
      yield path, value


def get(cfg, path: str):
  """The field at dotted ``path`` of ``cfg``."""
  for part in path.split("."):
    cfg = cfg[part]
  return cfg


def closest_field(path: str, known: Iterable[str]) -> str | None:
  """The known dotted field ``path`` most likely meant: the field of the
  same name in a sub-section of the same section (``model.levels`` ->
  ``model.firevnet.levels``, the schema's older flat form), else the closest
  spelling of the path, else of its last name within the same section
  (``model.widht`` -> ``model.firevnet.width``); None if nothing is
  close."""
  known = list(known)
  head, _, leaf = path.rpartition(".")
  moved = [k for k in known
           if k.endswith("." + leaf) and k.startswith(head + ".")
           and k.count(".") == path.count(".") + 1]
  if moved:
    return moved[0]
  close = difflib.get_close_matches(path, known, n=1)
  if close:
    return close[0]
  under = {k.rpartition(".")[2]: k for k in reversed(known)
           if not head or k.startswith(head + ".")}
  close = difflib.get_close_matches(leaf, list(under), n=1)
  return under[close[0]] if close else None


def _type_error(path, value, ref):
  return ConfigError(
      f"config.{path}={value!r} has type {type(value).__name__}; expected "
      f"{type(ref).__name__} (like the default {ref!r}).")


def set_fields(node: ml_collections.ConfigDict, given, prefix: str) -> None:
  """Sets the fields of the mapping ``given`` (nested for sub-sections) in
  ``node``; an unknown field or a value of the wrong type is a
  ConfigError."""
  for key in given.keys():
    value, path = given[key], f"{prefix}{key}"
    if key not in node:
      hint = closest_field(key, [p for p, _ in walk(node)])
      raise ConfigError(
          f"unknown config field config.{path}"
          + (f"; did you mean config.{prefix}{hint}?" if hint else
             f"; the fields of config.{prefix[:-1]} are "
             f"{sorted(node.keys())}."))
    ref = node[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not hasattr(value, "keys"):
        raise ConfigError(f"config.{path}={value!r}: a section, set its "
                          f"fields (e.g. config.{path}.{next(iter(ref))}).")
      set_fields(ref, value, path + ".")
      continue
    if isinstance(ref, tuple) and isinstance(value, list):
      value = tuple(value)            # JSON has no tuples
    elif isinstance(ref, float) and isinstance(value, int) and not isinstance(
        value, bool):
      value = float(value)
    if ref is not None and value is not None and type(value) is not type(ref):
      raise _type_error(path, value, ref)
    node[key] = value


def config_section(name: str, fields=None, /,
                   **kwargs) -> ml_collections.ConfigDict:
  """The section ``name`` (``"model"``, ``"data"``, ...) with the fields of
  ``fields`` (a mapping or ConfigDict, possibly partial) and of ``kwargs``
  set; every other field keeps its one default (its component's).

  This is how builders get a complete section from a partial one, e.g.
  ``build_model(config_section("model", name="mlp", mlp={"hidden": (64,)}),
  ...)``. An unknown field or a value of the wrong type raises
  ConfigError.
  """
  section = _default(_SECTIONS[name])
  given = dict(fields.items()) if fields is not None else {}
  given.update(kwargs)
  set_fields(section, given, f"{name}.")
  section.lock()
  return section


def checked_section(name: str, fields=None, /,
                    **kwargs) -> ml_collections.ConfigDict:
  """:func:`config_section`, then the section's own validation (what a
  builder runs on the section it is given)."""
  section = config_section(name, fields, **kwargs)
  check = _SECTIONS[name].validate
  if check is not None:
    check(section)
  return section


# -------------------------------------------------------------- validation
def check_types(config, schema: ml_collections.ConfigDict) -> None:
  """Every field of ``config`` is in ``schema`` and of its type."""
  known = dict(walk(schema))
  for path, value in walk(config):
    if path not in known:
      hint = closest_field(path, known)
      raise ConfigError(
          f"unknown config field config.{path}"
          + (f"; did you mean config.{hint}?" if hint else
             "; see the component settings (advinv_jax/config.py lists "
             "them) for the fields."))
    ref = known[path]
    if ref is None or value is None:
      continue
    ok = (isinstance(value, type(ref))
          or (isinstance(ref, float) and isinstance(value, int)
              and not isinstance(value, bool))
          or (isinstance(ref, (tuple, list)) and isinstance(value,
                                                            (tuple, list))))
    if isinstance(ref, int) and not isinstance(ref, bool) and isinstance(
        value, bool):
      ok = False
    if not ok:
      raise _type_error(path, value, ref)


def validate_config(config: ml_collections.ConfigDict,
                    schema: ml_collections.ConfigDict | None = None) -> None:
  """Checks a whole config; raises one clear ConfigError.

  Checks: every field is known (with a "did you mean" for misspellings),
  has the schema's type (``schema``, default :func:`default_config`); each
  section's own checks (sizes, ranges, names among the choices); the rules
  between sections (the loss against the model and the data).
  """
  check_types(config, default_config() if schema is None else schema)
  for s in _ordered():
    if s.validate is not None and s.name in config:
      s.validate(config[s.name])
  for check in _CHECKS:
    check(config)


def migrate_config(raw) -> ml_collections.ConfigDict:
  """A config read from an older workdir's ``config.json`` (a nested dict),
  in today's schema: each section's ``migrate`` (renamed fields; the flat
  ``config.model`` moved into its sub-sections), fields it lacks filled
  (the schema default, or the section's ``value_before``: the value that
  reproduces runs from before the field existed), JSON lists as tuples. A
  field the schema does not know raises ConfigError naming it."""
  raw = _nested_copy(raw)
  for s in _ordered():
    if isinstance(raw.get(s.name), dict):
      if s.migrate is not None:
        raw[s.name] = s.migrate(raw[s.name])
      for path, value in s.value_before.items():
        *parents, leaf = path.split(".")
        node = raw[s.name]
        for part in parents:
          node = node.setdefault(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
          node.setdefault(leaf, value)
  config = default_config()
  set_fields(config, raw, "")
  return config


def _nested_copy(d):
  if hasattr(d, "keys"):
    return {k: _nested_copy(d[k]) for k in d.keys()}
  return d


# ------------------------------------------- checks the sections share
def check_one_of(path: str, value, choices) -> None:
  """``value`` (of field ``config.<path>``) is one of ``choices``."""
  if value not in choices:
    raise ConfigError(f"config.{path}={value!r} is not one of "
                      f"{list(choices)}.")


def check_at_least(path: str, value, low, note: str = "") -> None:
  """``value >= low``."""
  if value < low:
    raise ConfigError(f"config.{path}={value!r} must be >= {low}{note}.")


def check_positive(path: str, value) -> None:
  """``value > 0``."""
  if value <= 0:
    raise ConfigError(f"config.{path}={value!r} must be > 0.")


def check_in(path: str, value, lo: float, hi: float, closed: str = "[)") -> None:
  """``value`` in the interval ``lo, hi`` (``closed``: which ends belong)."""
  ok = ((lo <= value if closed[0] == "[" else lo < value)
        and (value <= hi if closed[1] == "]" else value < hi))
  if not ok:
    raise ConfigError(f"config.{path}={value!r} must lie in "
                      f"{closed[0]}{lo:g}, {hi:g}{closed[1]}.")


def check_sizes(path: str, value, low: int = 1) -> None:
  """``value`` is a tuple of ints >= ``low``."""
  v = tuple(value)
  if any(isinstance(n, bool) or not isinstance(n, int) or n < low for n in v):
    raise ConfigError(f"config.{path}={v} must be a tuple of ints >= {low}.")


def check_regex(path: str, value: str) -> None:
  """``value`` compiles as a regular expression."""
  try:
    re.compile(value)
  except re.error as e:
    raise ConfigError(f"config.{path}={value!r} is not a valid regular "
                      f"expression: {e}.") from None
