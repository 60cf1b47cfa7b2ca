"""docs/papers.md, the map from each paper claim to its code, points at
things that exist, and every citation of it in the code names a section it
has. Plain file reads and ``ast`` only: nothing is imported or compiled."""
import ast
import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAPERS = DOCS / "papers.md"
TOP = ("advinv_jax", "configs", "experiments", "benchmarks", "tests", "docs")

_PATH = re.compile(r"^(?:%s)/[\w/.\-]*$" % "|".join(TOP))
_VARIANT = re.compile(r"^(configs/\w+\.py):([\w,]+)$")
_DOTTED = re.compile(r"^(?:advinv_jax|configs|experiments|benchmarks)(?:\.\w+)+$")
_FIELD = re.compile(r"^config(?:\.\w+)+$")


def _slug(heading: str) -> str:
  """GitHub's anchor of a Markdown heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(md: pathlib.Path) -> set:
  out, fenced = set(), False
  for line in md.read_text().splitlines():
    if line.startswith("```"):
      fenced = not fenced
    elif not fenced and re.match(r"#{1,6} ", line):
      out.add(_slug(line.lstrip("#")))
  return out


def _module_file(parts):
  """The file of the module ``parts`` (``a/b.py`` or ``a/b/__init__.py``)."""
  base = ROOT.joinpath(*parts)
  for f in (base.with_suffix(".py"), base / "__init__.py"):
    if f.is_file():
      return f
  return None


@functools.lru_cache(maxsize=None)
def _parse(path: pathlib.Path) -> ast.Module:
  return ast.parse(path.read_text())


def _defines(path: pathlib.Path, names) -> bool:
  """Whether ``names[0]`` is defined (or imported) at the top of ``path``,
  ``names[1]`` inside it, and so on; imports are followed into the repo."""
  body = _parse(path).body
  for i, name in enumerate(names):
    found = None
    for node in body:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                           ast.ClassDef)) and node.name == name:
        found = node
      elif isinstance(node, ast.Assign) and any(
          isinstance(t, ast.Name) and t.id == name for t in node.targets):
        found = node
      elif (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and node.target.id == name):
        found = node
      elif isinstance(node, ast.ImportFrom) and node.module:
        for a in node.names:
          if (a.asname or a.name) == name:
            target = _module_file(node.module.split("."))
            return target is None or _defines(target, [a.name, *names[i + 1:]])
    if found is None:
      return False
    body = getattr(found, "body", [])
  return True


def _dotted_exists(name: str) -> bool:
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    f = _module_file(parts[:i])
    if f is not None:
      return _defines(f, parts[i:]) if parts[i:] else True
  return False


@functools.lru_cache(maxsize=None)
def _package_lines() -> tuple:
  return tuple(line for p in (ROOT / "advinv_jax").rglob("*.py")
               for line in p.read_text().splitlines())


def _field_exists(field: str) -> bool:
  """A config field: its last name is set somewhere in the package."""
  leaf = field.rsplit(".", 1)[1]
  pattern = re.compile(rf"\.{leaf}\s*=|\b{leaf}\s*:|[\"']{leaf}[\"']")
  return any(pattern.search(line) for line in _package_lines() if leaf in line)


def _variant_exists(path: str, tokens: str) -> bool:
  """Each token of ``configs/x.py:a,b`` is a quoted choice in the file or a
  config module it imports from."""
  files = [ROOT / path]
  files += [f for m in re.findall(r"^from (configs\.\w+) import",
                                  files[0].read_text(), re.M)
            if (f := _module_file(m.split("."))) is not None]
  text = "".join(f.read_text() for f in files)
  return all(re.search(rf"[\"']{t}[\"']", text) for t in tokens.split(","))


def _problem(span: str):
  """What is wrong with one code span of papers.md (None: fine or prose)."""
  if "::" in span:
    path, *names = span.split("::")
    if not (ROOT / path).is_file():
      return f"no file {path}"
    return None if _defines(ROOT / path, names) else f"no test {span}"
  if m := _VARIANT.match(span):
    if not (ROOT / m[1]).is_file():
      return f"no file {m[1]}"
    return None if _variant_exists(m[1], m[2]) else f"no variant {span}"
  if _PATH.match(span):
    return None if (ROOT / span).exists() else f"no file {span}"
  if _DOTTED.match(span):
    return None if _dotted_exists(span) else f"no name {span}"
  if _FIELD.match(span):
    return None if _field_exists(span) else f"no config field {span}"
  return None


def _spans(text: str):
  return re.findall(r"`([^`\n]+)`", text)


def test_every_path_name_test_and_field_on_the_page_exists():
  spans = _spans(PAPERS.read_text())
  kinds = {"test": [s for s in spans if "::" in s],
           "dotted": [s for s in spans if _DOTTED.match(s)],
           "field": [s for s in spans if _FIELD.match(s)],
           "path": [s for s in spans if _PATH.match(s) or _VARIANT.match(s)]}
  assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
  problems = sorted({p for s in spans if (p := _problem(s))})
  assert not problems, "docs/papers.md cites what does not exist: " + "; ".join(
      problems)


def test_every_link_on_the_page_reaches_a_section():
  text = PAPERS.read_text()
  bad = []
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if target.startswith(("http://", "https://")):
      continue
    file, _, anchor = target.partition("#")
    md = PAPERS if not file else DOCS / file
    if not md.is_file():
      bad.append(target)
    elif anchor and anchor not in _anchors(md):
      bad.append(target)
  assert not bad, f"links in docs/papers.md to nothing: {bad}"


def test_each_claim_row_names_its_code_and_a_test():
  text = PAPERS.read_text().split("## Claims to code", 1)[1]
  rows = [r for r in text.splitlines() if r.startswith("|")]
  header = [c.strip() for c in rows[0].strip("|").split("|")]
  assert header == ["claim", "module", "config", "test", "experiment", "result"]
  claims = rows[2:]
  assert len(claims) >= 10
  for row in claims:
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 6, row
    assert "`advinv_jax" in cells[1] or "`configs" in cells[1], row
    assert "`tests/" in cells[3], row


@pytest.mark.parametrize("top", TOP)
def test_citations_of_papers_md_name_an_existing_section(top):
  anchors = _anchors(PAPERS)
  bad = []
  for path in (ROOT / top).rglob("*"):
    if path.suffix not in (".py", ".md") or path == pathlib.Path(__file__):
      continue
    for m in re.finditer(r"papers\.md(#[\w\-]+)?", path.read_text()):
      anchor = (m[1] or "")[1:]
      # Code must say which section it relies on; a page may link the whole.
      if (path.suffix == ".py" and not anchor) or (anchor and
                                                   anchor not in anchors):
        bad.append(f"{path.relative_to(ROOT)}: {m[0]}")
  assert not bad, f"citations of docs/papers.md without a section it has: {bad}"


def test_contributing_layout_names_every_module_and_only_existing_files():
  text = (ROOT / "CONTRIBUTING.md").read_text()
  block = text.split("## Layout", 1)[1].split("```", 2)[1]
  named, package = set(), None
  for line in block.splitlines():
    if m := re.match(r"^(  )?(\w[\w.]*/?)\s", line + " "):
      entry = m[2]
      if m[1] is None:
        package = entry if entry.endswith("/") else None
        named.add(entry)
      else:
        named.add(package + entry)
  named.update(f"advinv_jax/{f}" for f in re.findall(r"\b(_\w+\.py)\b", block)
               if (ROOT / "advinv_jax" / f).is_file())
  missing = sorted(n for n in named if not (ROOT / n).exists())
  assert not missing, f"CONTRIBUTING.md's layout names what does not exist: {missing}"
  modules = {f"advinv_jax/{p.name}" + ("/" if p.is_dir() else "")
             for p in (ROOT / "advinv_jax").iterdir()
             if p.name not in ("__init__.py", "__pycache__")
             and (p.suffix == ".py" or (p / "__init__.py").is_file())}
  mains = {"advinv_jax/main.py"}   # named with job.py
  left_out = sorted(modules - named - mains)
  assert not left_out, f"CONTRIBUTING.md's layout leaves out: {left_out}"
