"""The CI example (docs/workflows/reproduce.yml) passes actionlint and does what docs/ci.md says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

WORKFLOW = REPO / "docs" / "workflows" / "reproduce.yml"


def actionlint(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert exe, "actionlint is not installed: make setup (the test extra) installs it"
    return subprocess.run([exe, "-no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_the_workflow_passes_actionlint():
    r = actionlint(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    timeout: 90"))
    r = actionlint(broken)
    assert r.returncode != 0 and "timeout" in r.stdout


def test_the_workflow_caches_reproduces_checks_and_posts_the_diffs():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["reproduce"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = {s.get("uses", "").split("@")[0]: s.get("with", {}) for s in steps}
    assert uses["actions/setup-python"]["cache"] == "pip"
    assert uses["actions/cache"]["path"] == ".dvc/cache"
    assert uses["actions/checkout"]["fetch-depth"] == 0  # the base branch is there to diff against
    for command in ("make repro", "make check", 'dvc metrics diff --md "$BASE"', 'dvc params diff --md "$BASE"',
                    "gh pr comment"):
        assert command in runs, command
    makefile = (REPO / "Makefile").read_text()
    assert "\ncheck: setup\n" in makefile and "t2i check" in makefile
