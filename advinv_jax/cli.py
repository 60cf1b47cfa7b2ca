"""Command-line plumbing shared by ``advinv_jax.main`` and ``experiments/``.

:func:`run` is ``absl.app.run`` with one change: a command-line or config
error (an unknown flag, an unknown config field such as
``--config.train.batch_sise=3``, a value of the wrong type, a config file or
variant that does not load) ends the program with ONE line naming the flag or
field and the fix, instead of a traceback. Raising :class:`UsageError` (or the
config's ``ConfigError``) from ``main`` after parsing ends the same way, so
scripts validate their configs before any jax work and fail in one line.

Overrides use ``ml_collections.config_flags`` everywhere:
``--config.<field>=<value>``, typed by the config being overridden.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Mapping, Optional

from absl import app, flags
import ml_collections
from ml_collections import config_flags

from advinv_jax.config import closest_field

FLAGS = flags.FLAGS


class UsageError(Exception):
  """A bad command line found after parsing (one line, no traceback)."""


def fields(config) -> Dict[str, Any]:
  """``{dotted path: value}`` of the leaves of a ConfigDict."""
  out = {}
  for key in config.keys():
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      out.update({f"{key}.{k}": v for k, v in fields(value).items()})
    else:
      out[key] = value
  return out


def unknown_field_message(path: str, known, flag: str = "config") -> str:
  """``--config.<path>`` names no field: the line that says so, with the
  closest known field as the fix."""
  close = closest_field(path, known)
  fix = (f"did you mean --{flag}.{close}?" if close else
         "--helpfull lists the fields.")
  return f"--{flag}.{path}: the config has no field {path!r}; {fix}"


def _is_config_flag(flag) -> bool:
  return hasattr(type(flag), "override_values")   # config_flags' flag class


def _flag_value_arg(name: str, argv: List[str]) -> Optional[str]:
  """The value of ``--name=v`` / ``--name v`` in argv (the last one)."""
  value = None
  for i, a in enumerate(argv):
    if a.startswith(f"--{name}="):
      value = a.split("=", 1)[1]
    elif a == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _unknown_override(name: str, config, argv: List[str]) -> Optional[str]:
  """The first ``--<name>.<path>`` of argv whose path is no field of
  ``config``, as one line (None if all are fields)."""
  prefix = f"--{name}."
  known = fields(config)
  for a in argv:
    if a.startswith(prefix):
      path = a[len(prefix):].split("=", 1)[0]
      if path not in known and not any(k.startswith(path + ".")
                                       for k in known):
        return unknown_field_message(path, known, name)
  return None


def _explain_config_overrides(argv: List[str]) -> Optional[str]:
  """For a failed parse: the config file that does not load, or the first
  ``--<config flag>.<path>`` whose path is not a field of that flag's config,
  as one line (None if neither)."""
  for name in list(FLAGS):
    flag = FLAGS[name]
    if not _is_config_flag(flag):
      continue
    config = flag.default if isinstance(
        flag.default, ml_collections.ConfigDict) else None
    arg = _flag_value_arg(name, argv)
    if arg is not None:
      try:
        config = flag.parser.parse(arg)
        fields(config)   # a file that did not load raises here
      except Exception as e:  # pylint: disable=broad-except
        return f"--{name}={arg}: {_one_line(e)}"
    if config is not None:
      msg = _unknown_override(name, config, argv)
      if msg:
        return msg
  return None


def _one_line(e: BaseException) -> str:
  """The line of an exception's message that says what is wrong."""
  text = str(e)
  if isinstance(e, KeyError) and len(e.args) == 1:
    text = str(e.args[0])
  lines = [l.strip() for l in text.replace("\\n", "\n").splitlines()
           if l.strip()]
  if not lines:
    return type(e).__name__
  if "Traceback (most recent call last)" in text or isinstance(e, OSError):
    # ml_collections puts a config file's traceback into the message, and a
    # file it could not load as a list of attempts: the last line says why.
    return lines[-1]
  # ml_collections puts its "did you mean" on a second line; keep both.
  return " ".join(lines[:2])


_ERRORS = (flags.Error, AttributeError, KeyError, TypeError, ValueError,
           OSError, ImportError, SyntaxError)


def define_config(name: str, config, help_string: str):
  """``config_flags.DEFINE_config_dict(name, config)``: ``--<name>.<field>=
  <value>`` overrides typed by ``config``. config_flags reads the overrides
  in sys.argv already here, at definition; a misspelt field ends the program
  in one line like any other flag error."""
  try:
    return config_flags.DEFINE_config_dict(name, config, help_string,
                                           lock_config=True)
  except _ERRORS as e:
    sys.exit("error: " + (_unknown_override(name, config, sys.argv[1:])
                          or _one_line(e)))


def parse_flags(argv: List[str]) -> List[str]:
  """absl's flag parsing; a bad flag or config field exits with one line."""
  try:
    rest = FLAGS(argv)
    for name in list(FLAGS):
      if _is_config_flag(FLAGS[name]) and FLAGS[name].value is not None:
        getattr(FLAGS[name].value, "keys")  # a file that did not load raises
    return rest
  except _ERRORS as e:
    msg = _explain_config_overrides(argv[1:]) or _one_line(e)
    if isinstance(e, flags.UnrecognizedFlagError):
      msg += " (--helpfull lists the flags)"
    sys.exit(f"error: {msg}")


def override_values(name: str = "config") -> Dict[str, Any]:
  """``{dotted path: value}`` of the ``--<name>.<path>=<value>`` overrides
  given on the command line (typed by the flag's config)."""
  return dict(config_flags.get_override_values(FLAGS[name]))


def apply_overrides(config, overrides: Mapping[str, Any]):
  """Sets each ``{dotted path: value}`` of ``overrides`` in ``config`` (in
  place; returns it). A path the config lacks raises :class:`UsageError`."""
  known = fields(config)
  for path, value in overrides.items():
    if path not in known:
      raise UsageError(unknown_field_message(path, known))
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value   # an existing key: allowed on a locked config
  return config


def run(main: Callable[[List[str]], Any]) -> None:
  """``app.run(main)`` with one-line errors: bad flags or config fields while
  parsing, and :class:`UsageError` / ``ConfigError`` raised by ``main``."""
  from advinv_jax.config import ConfigError

  def wrapped(argv):
    try:
      return main(argv)
    except (UsageError, ConfigError) as e:
      sys.exit(f"error: {e}")

  app.run(wrapped, flags_parser=parse_flags)
