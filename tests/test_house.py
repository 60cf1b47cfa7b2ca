"""House rules read from the source with ``ast`` (nothing is imported).

A function's length is its code: from its ``def`` to its last line, less
its docstring (the house wants docstrings with shapes and the math; they do
not make a function harder to follow).
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 100

# "path:function" -> why it may stay longer than MAX_LINES.
LONG_FUNCTIONS = {}


def _functions():
  """``{"path:name": code lines}`` of every function in ``advinv_jax/``."""
  out = {}
  for d, _, files in os.walk(os.path.join(ROOT, "advinv_jax")):
    for f in files:
      if not f.endswith(".py"):
        continue
      path = os.path.join(d, f)
      with open(path) as fh:
        tree = ast.parse(fh.read(), path)
      rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
      for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          first = node.body[0]
          if (isinstance(first, ast.Expr) and isinstance(first.value,
                                                          ast.Constant)
              and isinstance(first.value.value, str)):
            lines -= first.end_lineno - first.lineno + 1
          key = f"{rel}:{node.name}"
          out[key] = max(lines, out.get(key, 0))
  return out


def test_no_function_longer_than_the_limit():
  long = {k: n for k, n in _functions().items() if n > MAX_LINES}
  unexplained = {k: n for k, n in long.items() if k not in LONG_FUNCTIONS}
  assert not unexplained, (
      f"functions over {MAX_LINES} lines of code (docstring aside): "
      f"{unexplained}; split them, or add each to LONG_FUNCTIONS with the "
      "reason")


def test_the_allow_list_is_current():
  """An entry whose function is gone or back under the limit is removed."""
  found = _functions()
  stale = [k for k in LONG_FUNCTIONS if found.get(k, 0) <= MAX_LINES]
  assert not stale, f"LONG_FUNCTIONS entries now short or gone: {stale}"
