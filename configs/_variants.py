"""Variants of a config file: ``--config=configs/<name>.py:<tokens>``.

A config file declares its variant groups, e.g. ``{"loss": ("ce", "ice"),
"scale": ("paper", "cpu")}``; the variant string names at most one choice
of each group, comma-separated, in any order (``:ice,cpu`` = ``:cpu,ice``);
a group left out takes its first choice. Another group (say
``recipe=("ours", "authors")``) composes with the others without new files.
"""
from typing import Dict, Optional, Sequence


def parse_variant(arg: Optional[str], config: str,
                  groups: Dict[str, Sequence[str]]) -> Dict[str, str]:
  """``'ice,cpu'`` -> ``{"loss": "ice", "scale": "cpu"}`` for ``groups``.

  Raises:
    ValueError: a token no group has, or two of one group; the message names
      the choices and an example (``config`` is the file's name).
  """
  chosen = {}
  for token in (t.strip() for t in (arg or "").split(",")):
    if not token:
      continue
    group = next((g for g, choices in groups.items() if token in choices),
                 None)
    if group is None or group in chosen:
      example = ",".join(choices[-1] for choices in groups.values())
      what = (f"unknown variant {token!r}" if group is None else
              f"variants {chosen[group]!r} and {token!r} are both a {group}")
      raise ValueError(
          f"configs/{config}.py: {what}; name at most one of each of "
          + "; ".join(f"{g}: {', '.join(c)}" for g, c in groups.items())
          + f" (the first is the default), e.g. configs/{config}.py:{example}.")
    chosen[group] = token
  return {g: chosen.get(g, choices[0]) for g, choices in groups.items()}
