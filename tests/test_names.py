"""One name, one place: no two top-level functions or classes of the library share a name."""

import ast
from collections import defaultdict
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "t2i"


def test_no_two_library_definitions_share_a_name():
    where = defaultdict(list)
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                where[node.name].append(str(path.relative_to(LIBRARY.parent)))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, f"defined more than once: {twice}"
