"""Command-line plumbing shared by ``advinv_jax.main`` and ``experiments/``.

:func:`run` is ``absl.app.run`` with one change: a command-line or config
error (an unknown flag, an unknown config field such as
``--config.train.batch_sise=3``, a value of the wrong type, a config file or
variant that does not load) ends the program with ONE line naming the flag or
field and the fix, instead of a traceback. Raising :class:`UsageError` (or the
config's ``ConfigError``) from ``main`` after parsing ends the same way, so
scripts validate their configs before any jax work and fail in one line.

Overrides use ``ml_collections.config_flags`` everywhere:
``--config.<field>=<value>``, typed by the config being overridden. A field
given twice takes the last value, tuples included (ml_collections would
append a repeated tuple override: ``--config.model.cnn.features=(8,8)
--config.model.cnn.features=(4,)`` would train ``(8, 8, 4)``).

Any other error a script ends with (a refused run, a full disk, an
unreadable workdir, SIGTERM) is one line too; ``--debug`` (or
``ADVINV_DEBUG=1``) prints the full traceback instead.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional

from absl import app, flags
import ml_collections
from ml_collections import config_flags
from ml_collections.config_flags import tuple_parser

from advinv_jax._settings import closest_field, walk

FLAGS = flags.FLAGS
_DEBUG = flags.DEFINE_bool(
    "debug", False, "print the full traceback of an error instead of its one "
    "line (also: ADVINV_DEBUG=1)")


class _ReplacingTupleParser(flags.ArgumentParser):
  """ml_collections' tuple parser, as a plain (single-value) flag parser.

  config_flags gives a tuple field absl's ``MultiFlag`` when its parser is a
  ``TupleParser``, so a repeated ``--config.<tuple field>=...`` appends; with
  this parser the field is an ordinary flag and the last value given wins,
  as for every other type."""

  def __init__(self):
    self._tuple = tuple_parser.TupleParser()

  def parse(self, argument):
    return self._tuple.parse(argument)

  def flag_type(self):
    return "tuple"


config_flags.register_flag_parser_for_type(tuple, _ReplacingTupleParser())


class UsageError(Exception):
  """A bad command line found after parsing (one line, no traceback)."""


def fields(config) -> Dict[str, Any]:
  """``{dotted path: value}`` of the leaves of a ConfigDict."""
  return dict(walk(config))


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


def debug() -> bool:
  """Whether errors print their full traceback (``--debug`` or
  ``ADVINV_DEBUG=1``)."""
  if os.environ.get("ADVINV_DEBUG", "") not in ("", "0"):
    return True
  return "--debug" in sys.argv or (FLAGS.is_parsed() and _DEBUG.value)


def parse_flags(argv: List[str]) -> List[str]:
  """absl's flag parsing; a bad flag or config field, or a config file that
  raises (its ``get_config`` included), exits with one line."""
  try:
    rest = FLAGS(argv)
    for name in list(FLAGS):
      if _is_config_flag(FLAGS[name]) and FLAGS[name].value is not None:
        getattr(FLAGS[name].value, "keys")  # a file that did not load raises
    return rest
  except Exception as e:  # pylint: disable=broad-except
    if debug():
      raise
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
    try:
      node[leaf] = value   # an existing key: allowed on a locked config
    except (TypeError, ValueError) as e:
      raise UsageError(f"--config.{path}={value!r}: {_one_line(e)} (the "
                       f"default is {known[path]!r})") from None
  return config


def one_line_error(e: BaseException, workdir: str = "."):
  """``(line, exit code)`` for the errors a script explains in one line
  (usage and config errors, workdir ownership, relaunch, checkpoints,
  interrupts, full disks, files that cannot be read or written); ``(None,
  None)`` for the others (bugs), which keep their traceback."""
  from advinv_jax.runs import (DiskFullError, Interrupted, RunError,
                               disk_full_error, is_disk_full, shorten)
  from advinv_jax._settings import ConfigError
  if isinstance(e, (UsageError, ConfigError)):
    return f"error: {e}", 2
  if isinstance(e, KeyboardInterrupt):   # outside the training loop
    name = str(e) if isinstance(e, Interrupted) else "SIGINT"
    return (f"interrupted ({name}) outside training (loading, evaluation or "
            "the report): checkpoints and completed outputs are intact; "
            "relaunch the same command to continue (a finished run only "
            "redoes what is missing)."), getattr(e, "exit_code", 130)
  if is_disk_full(e) and not isinstance(e, DiskFullError):
    e = disk_full_error(workdir, "running")
  if isinstance(e, RunError) or type(e).__name__ == "NonFiniteError":
    return f"error: {e}", getattr(e, "exit_code", 1)
  if isinstance(e, OSError):
    where = f": {shorten(str(e.filename))}" if e.filename else ""
    return (f"error: {e.strerror or _one_line(e)}{where} (--debug for the "
            "traceback)"), 1
  return None, None


def run(main: Callable[[List[str]], Any]) -> None:
  """``app.run(main)`` with one-line errors: bad flags or config fields while
  parsing, and every refusal raised by ``main`` (:func:`one_line_error`);
  SIGTERM raises in the main thread like SIGINT, so that cleanups run.
  ``--debug`` / ``ADVINV_DEBUG=1``: full tracebacks."""
  from advinv_jax.platform import enable_compilation_cache

  def wrapped(argv):
    from advinv_jax.runs import signals_raise  # after parsing: imports jax
    enable_compilation_cache()   # on unless ADVINV_JAX_COMPILATION_CACHE=off
    try:
      with signals_raise():
        return main(argv)
    except (Exception, KeyboardInterrupt) as e:  # pylint: disable=broad-except
      line, code = one_line_error(e)
      if line is None or debug():
        raise
      print(line, file=sys.stderr, flush=True)
      sys.exit(code)

  app.run(wrapped, flags_parser=parse_flags)
