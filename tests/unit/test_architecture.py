"""The architecture holds (docs/design.md#architecture): no import cycles, and every import inside a
function says why it is not at the top (`# lazy: ...` or `# optional: ...`). The layer order itself is `lint-imports` (pyproject.toml), run by
`make test`; it is also run here so a plain pytest run catches a broken contract."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
from paths import REPO

ROOT = REPO
PACKAGE = ROOT / "fairtune_ray"


def import_cycles(package: str = "fairtune_ray") -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), imports in functions included."""
    graph = grimp.build_graph(package)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for m in sorted(edges):
        if m not in index:
            visit(m)
    return out


REASONS = ("# lazy:", "# optional:")


def _has_reason(lines: list[str], lineno: int) -> bool:
    """A '# lazy: why' / '# optional: why' on the import's line or on the import block just above it."""
    i = lineno - 1
    if any(r in lines[i] for r in REASONS):
        return True
    i -= 1
    while i >= 0:
        text = lines[i].strip()
        if any(text.startswith(r) or r in text for r in REASONS):
            return True
        if not (text.startswith(("import ", "from ", "#", "try:")) or text == ""):
            return False
        i -= 1
    return False


def unexplained_lazy_imports() -> list[str]:
    """Imports inside a function body that do not say why they are there and not at the top."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not _has_reason(lines, node.lineno):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return sorted(set(found))


def test_no_import_cycles():
    assert import_cycles() == []


def test_imports_inside_functions_say_why():
    assert unexplained_lazy_imports() == []


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is not installed (pip install -e '.[test]')"
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]


def test_design_references_resolve():
    """Every `docs/design.md#anchor` cited in the code names a heading of docs/design.md."""
    headings = [line.lstrip("#").strip() for line in (ROOT / "docs" / "design.md").read_text().splitlines()
                if line.startswith("#")]
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    cited = {m for p in PACKAGE.rglob("*.py") for m in re.findall(r"docs/design\.md#([a-z0-9-]+)", p.read_text())}
    assert cited, "the code cites no section of docs/design.md"
    assert sorted(cited - anchors) == []
