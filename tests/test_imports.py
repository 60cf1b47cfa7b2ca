"""Imports flow one way through the package, and there is no import cycle.

Every module of ``advinv_jax`` is read with ``ast`` (nothing is imported);
every ``import`` / ``from ... import`` in it counts, at module level or
inside a function (a late import that dodges a cycle is still an arrow).
Importing ``a.b.c`` also runs the package ``a.b``'s ``__init__``, so it is
an arrow to that package too.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = "advinv_jax"

# The layers, bottom first: a module may import its own layer and those below
# it, never one above. A name is a module or a package (and so everything in
# it). Within one package the modules import each other freely (the cycle
# check still applies).
LAYERS = (
    ("_settings", "_checks", "_files", "platform", "runs"),
    ("layers",),
    ("models", "data"),
    ("losses", "attacks", "invariance", "lowrank"),
    ("train",),
    ("config",),
    ("report", "_report_pages", "_report_invariance"),
    ("cli", "job", "main"),
)


def _modules():
  """``{dotted module name: path}`` of every module of the package."""
  out = {}
  for d, _, files in os.walk(os.path.join(ROOT, PKG)):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out[".".join(rel)] = os.path.join(d, f)
  return out


def _imports(name, path, modules):
  """The package's modules that module ``name`` imports (with the packages
  whose ``__init__`` each import runs)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  is_pkg = path.endswith("__init__.py")
  here = name if is_pkg else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    targets = []
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = here.split(".")
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      targets = [base] + [f"{base}.{a.name}" for a in node.names]
    for t in targets:
      if not t.startswith(PKG):
        continue
      parts = t.split(".")
      for i in range(2, len(parts) + 1):     # the packages it runs too
        m = ".".join(parts[:i])
        if m in modules and m != name:
          found.add(m)
  return found


def _graph():
  modules = _modules()
  return {m: _imports(m, p, modules) for m, p in modules.items()}


def _layer(module):
  top = module.split(".")[1] if module != PKG else None
  for i, names in enumerate(LAYERS):
    if top in names:
      return i
  return None


def test_every_module_has_a_layer():
  missing = sorted(m for m in _graph() if m != PKG and _layer(m) is None)
  assert not missing, (f"modules in no layer of LAYERS: {missing}; add each "
                       "to the layer it belongs to")


def test_imports_flow_down():
  upward = []
  for m, deps in sorted(_graph().items()):
    if m == PKG or _layer(m) is None:     # test_every_module_has_a_layer
      continue
    for d in sorted(deps):
      if d != PKG and _layer(d) is not None and _layer(d) > _layer(m):
        upward.append(f"{m} imports {d} (layer {LAYERS[_layer(d)]} is above "
                      f"{LAYERS[_layer(m)]})")
  assert not upward, "\n".join(upward)


def test_no_import_cycle():
  graph = _graph()
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(graph.get(m, ())):
      # A package's __init__ importing its own modules is how packages
      # work; the arrow back from them to the package is a cycle only if a
      # module needs a name the package defines, which it cannot.
      if state.get(d) == "open":
        if not (m.startswith(d + ".") or d.startswith(m + ".")):
          cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("source,arrow", [
    ("from advinv_jax.config import x", "advinv_jax.config"),
    ("def f():\n  from advinv_jax import config", "advinv_jax.config"),
    ("import advinv_jax.train._loop", "advinv_jax.train"),
])
def test_the_walk_sees_late_and_package_imports(tmp_path, source, arrow):
  """The checks see imports inside functions and the package an import of
  its module runs (what the tests above rely on)."""
  p = tmp_path / "m.py"
  p.write_text(source)
  modules = {"advinv_jax.config": "", "advinv_jax.train": "",
             "advinv_jax.train._loop": "", "advinv_jax.layers.m": str(p)}
  assert arrow in _imports("advinv_jax.layers.m", str(p), modules)
