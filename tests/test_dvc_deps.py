"""Every project module a DVC stage's command can import is listed in that stage's ``deps``.

For each stage in dvc.yaml, ``cmd: t2i <name>`` is mapped to its Typer command in
``stages/cli.py`` and so to its module ``stages/<module>.py``. From there the project files
it can import are followed transitively with ``ast``: every ``import``/``from ... import``
anywhere in a file (the stages import lazily inside ``main``), the packages above each module,
submodules named in ``from pkg import sub``, and string literals that name a project module
(``t2i.data.sources.ADAPTERS``' ``module:function`` names, loaded with ``importlib``). Each such file must be
covered by a dep (a directory dep covers every file below it), else a code change leaves stale
outputs that ``dvc status`` calls up to date. Code deps must also exist and be imported
(no stale deps).
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from stages.cli import app

REPO = Path(__file__).resolve().parent.parent
PROJECT = ("t2i", "stages")
# Deliberately not required: the CLI itself and the package roots. t2i/__init__.py holds only
# __version__ and T2IError; listing it would rerun every stage on a version bump.
IGNORED = {"stages/__init__.py", "stages/cli.py", "t2i/__init__.py"}


def module_file(name: str) -> Path | None:
    """The file of project module ``name`` (``t2i.x.y`` -> t2i/x/y.py or t2i/x/y/__init__.py)."""
    if name.split(".")[0] not in PROJECT:
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every module the file at ``path`` may import, packages included."""
    parts = path.relative_to(REPO).with_suffix("").parts
    package = parts[:-1]  # the package a relative import starts from (x/__init__.py: x itself)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            prefix = list(package[: len(package) - node.level + 1]) if node.level else []
            base = ".".join(prefix + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # kept if a module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":")[0]  # "module" or "module:function"
            if name.startswith("t2i.") and module_file(name):  # an import_module registry
                names.add(name)
    # importing a.b.c also imports the packages a and a.b
    return {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}


def reachable_files(module: str) -> set[str]:
    """Repo-relative paths of every project file importing ``module`` may load, transitively."""
    seen: set[Path] = set()
    todo = [module_file(module)]
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name) for name in imported_modules(path))
    return {p.relative_to(REPO).as_posix() for p in seen}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
COMMANDS = {c.name: c.callback.__module__ for c in app.registered_commands}  # generate: no stage


def test_stage_deps_cover_every_imported_module():
    missing = {}
    for stage, spec in STAGES.items():
        tool, name = spec["cmd"].split()[:2]
        assert tool == "t2i" and name in COMMANDS, f"{stage}: cmd {spec['cmd']!r} is no t2i command"
        needed = reachable_files(COMMANDS[name]) - IGNORED
        gaps = sorted(p for p in needed if not covered(p, spec.get("deps", [])))
        if gaps:
            missing[stage] = gaps
    report = "\n".join(f"{stage}:\n" + "".join(f"      - {p}\n" for p in gaps)
                       for stage, gaps in missing.items())
    assert not missing, f"dvc.yaml deps miss modules their command imports:\n{report}"


def test_code_deps_exist_and_are_imported():
    """A code dep that is missing, or that the command never imports, only causes needless reruns."""
    stale = []
    for stage, spec in STAGES.items():
        needed = reachable_files(COMMANDS[spec["cmd"].split()[1]])
        for dep in spec.get("deps", []):
            if dep.endswith(".py") or dep.split("/")[0] in PROJECT:
                if not (REPO / dep).exists():
                    stale.append(f"{stage}: {dep} does not exist")
                elif not any(covered(p, [dep]) for p in needed):
                    stale.append(f"{stage}: {dep} is not imported by `{spec['cmd']}`")
    assert not stale, "dvc.yaml lists stale code deps:\n" + "\n".join(stale)


def test_the_committed_lock_hashes_this_code():
    """dvc.lock records the code and params this checkout has (scripts/relock.py --check): a code
    change that leaves dvc.lock's hashes behind makes `dvc status` call every stage changed."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(REPO / "scripts" / "relock.py"), "--check"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
