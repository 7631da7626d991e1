"""The package's import structure (STYLE.md rule 11): imports flow one way between ltx_jax's files
(no cycles, imports inside functions included) and nothing in the installed package imports
torch, diffusers or transformers, which are test and benchmark dependencies only."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'ltx_jax'
HEAVY = ('torch', 'diffusers', 'transformers')


def _module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules() -> dict[str, Path]:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def _imports(path: Path, name: str) -> set[str]:
  """Every module name an import statement anywhere in the file (functions included) names:
  `import a.b` gives a.b; `from a import b` gives a and a.b (b may be a module or a name)."""
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # relative: resolve against this file's package
        anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      out.add(base)
      out |= {f'{base}.{a.name}' for a in node.names}
  return out


def import_graph() -> dict[str, set[str]]:
  """module -> the package modules it imports. Importing one's own parent package (a package's
  `__init__` re-exporting it) is not an edge: Python has already started importing it."""
  modules = _modules()
  return {name: {d for d in _imports(path, name)
                 if d in modules and d != name and not name.startswith(d + '.')}
          for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan, iterative)."""
  index, low, on_stack, stack, found = {}, {}, set(), [], []
  counter = 0
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = counter
    counter += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      v, edges = work[-1]
      w = next(edges, None)
      if w is not None:
        if w not in index:
          index[w] = low[w] = counter
          counter += 1
          stack.append(w)
          on_stack.add(w)
          work.append((w, iter(sorted(graph[w]))))
        elif w in on_stack:
          low[v] = min(low[v], index[w])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[v])
      if low[v] == index[v]:
        component = []
        while True:
          w = stack.pop()
          on_stack.discard(w)
          component.append(w)
          if w == v:
            break
        if len(component) > 1:
          found.append(sorted(component))
  return sorted(found)


def test_cycle_finder_on_a_known_graph():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a', 'e'}, 'e': {'d'}, 'f': set()}
  assert import_cycles(graph) == [['a', 'b', 'c'], ['d', 'e']]
  assert import_cycles({'a': {'b'}, 'b': set()}) == []


def test_imports_inside_functions_and_relative_imports_count(tmp_path):
  path = tmp_path / 'm.py'
  path.write_text('import a.b\n'
                  'def f():\n'
                  '  from ltx_jax.models import vae\n'
                  '  from . import sibling\n'
                  '  from ..nn.layers import Dense\n')
  assert _imports(path, 'ltx_jax.pipeline.m') == {
      'a.b', 'ltx_jax.models', 'ltx_jax.models.vae', 'ltx_jax.pipeline',
      'ltx_jax.pipeline.sibling', 'ltx_jax.nn.layers', 'ltx_jax.nn.layers.Dense'}


# Until issue 12's loading front door lands, this fails listing one cycle,
# ltx_jax.models.vae.loading <-> ltx_jax.weights.orbax_io (orbax_io builds the models back).
def test_no_import_cycles():
  cycles = import_cycles(import_graph())
  assert not cycles, 'import cycles between ltx_jax files (imports inside functions count):\n' + \
      '\n'.join(' <-> '.join(c) for c in cycles)


def test_no_torch_diffusers_or_transformers_inside_the_package():
  bad = sorted(f'{name}: {dep}' for name, path in _modules().items()
               for dep in _imports(path, name) if dep.split('.')[0] in HEAVY)
  assert not bad, 'the installed package must not import the PyTorch stack:\n' + '\n'.join(bad)


def _python(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT)))


def test_every_module_imports_without_torch():
  """With torch, diffusers and transformers unimportable (None in sys.modules makes `import`
  raise ImportError), every module of the package imports."""
  code = f"""
import sys
for name in {HEAVY!r}:
  sys.modules[name] = None
import importlib, pkgutil
import ltx_jax
names = [m.name for m in pkgutil.walk_packages(ltx_jax.__path__, 'ltx_jax.')]
for name in names:
  importlib.import_module(name)
print(len(names))
"""
  out = _python(code)
  assert out.returncode == 0, out.stderr[-3000:]
  assert int(out.stdout.split()[-1]) > 30


def test_generate_does_not_load_torch():
  code = f"""
import sys
import ltx_jax, ltx_jax.generate
print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))
"""
  out = _python(code)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split('\n')[-2] == '[]', out.stdout
