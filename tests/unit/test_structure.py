"""The package stays easy to read: short functions, small files (docs/design.md, 'Architecture')."""
from __future__ import annotations

import ast

from paths import REPO

PACKAGE = REPO / "fairtune_ray"
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 350


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in _functions(tree):
            n = fn.end_lineno - fn.lineno + 1
            if n > limit:
                out.append((n, f"{path.relative_to(PACKAGE.parent)}:{fn.lineno} {fn.name}"))
    return sorted(out, reverse=True)


def long_files(limit: int = MAX_FILE_LINES) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text().splitlines()), str(p.relative_to(PACKAGE.parent))) for p in PACKAGE.rglob("*.py")]
    return sorted((n, p) for n, p in sizes if n > limit)


def test_no_function_over_60_lines():
    assert long_functions() == []


def test_no_file_over_350_lines():
    assert long_files() == []


if __name__ == "__main__":
    print("functions over", MAX_FUNCTION_LINES, "lines:", *long_functions(), sep="\n  ")
    print("files over", MAX_FILE_LINES, "lines:", *long_files(), sep="\n  ")
