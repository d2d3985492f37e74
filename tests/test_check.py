"""``t2i check``: the workspace against the committed dvc.lock, to the byte where every CPU kind can
(download, shard, embed), within tolerances.yaml where another kind cannot (the trained stages;
another kind stood in for by pinning the CPU math libraries to AVX2)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from t2i import T2IError
from t2i.check import Metric, Output, Report, flatten, load_tolerances
from t2i.device import PINNED_ISA
from tests.project import dvc, make_project, run
from tests.test_cli_errors import error_line, t2i

DATASET = "synthetic-flowers"
EVAL = f"data/eval/{DATASET}/metrics.json"


def test_flatten_names_nested_metrics_as_dvc_does():
    assert flatten({"attr": {"petal": {"fake": 0.5, "pairs": 4}}, "fd": 1.5, "ok": True, "note": "x"}) == {
        "attr/petal/fake": 0.5, "attr/petal/pairs": 4.0, "fd": 1.5}


@pytest.mark.parametrize("text, named", [("download: {x: 1}", "'download'"), ("train: {loss: -1}", "train.loss"),
                                          ("evaluate: {fd: wide}", "'wide'"), ("evaluate: {fd: .inf}", "inf")])
def test_a_bad_tolerance_is_named(tmp_path, text, named):
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(T2IError, match=named):
        load_tolerances(tmp_path / "t.yaml")


def test_the_repo_tolerances_load_and_name_trained_stages_only():
    from tests.conftest import REPO

    tol = load_tolerances(REPO / "tolerances.yaml")
    assert set(tol) == {"ground", "train", "evaluator", "evaluate"} and all(tol.values())


def test_tolerances_script_takes_twice_the_range_and_keeps_the_comments(tmp_path):
    """scripts/tolerances.py: 2x (max - min) over the runs, the floor below that, rounded up."""
    import sys

    from tests.conftest import REPO

    for name, (count, fd) in {"a": (0.25, 14.0), "b": (0.2611, 30.5), "c": (0.27, 20.0)}.items():
        folder = tmp_path / name / "eval" / "synthetic-flowers"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(
            {"attr": {"petal_count": {"fake": count, "real": 1.0}}, "fd_evaluator": fd}))
    tol = tmp_path / "tolerances.yaml"
    tol.write_text("# why\nevaluate:   # generated\n  attr/petal_count/fake: 9  # kept\n  fd_evaluator: 9\n"
                   "evaluator:\n  attr/petal_count/real: 9\n")
    runs = [f"{n}={tmp_path / n}" for n in "abc"]
    script = str(REPO / "scripts" / "tolerances.py")
    r = subprocess.run([sys.executable, script, *runs, "--tolerances", str(tol), "--write"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert tol.read_text() == ("# why\nevaluate:   # generated\n  attr/petal_count/fake: 0.04  # kept\n"
                               "  fd_evaluator: 33\nevaluator:\n  attr/petal_count/real: 0.02\n")
    assert "| evaluate | `attr/petal_count/fake` | 0.250 | 0.261 | 0.270 | 0.020 | 0.04 |" in r.stdout


def test_failures_name_what_must_match_and_what_moved_too_far():
    r = Report("HEAD", None, {}, same_kind=False, outputs=[
        Output("shard", "data/shards/x", "a.dir", "b.dir", strict=True, detail="1 changed: t.tar"),
        Output("train", "data/models/x", "c.dir", "d.dir", strict=False),  # another kind: metrics decide
        Output("embed", "data/embeddings/x", "e.dir", None, strict=True)],
        metrics=[Metric("evaluate", "fd", 10.0, 12.5, 2.0), Metric("evaluate", "r", 0.7, 0.69, 0.05),
                 Metric("train", "d", None, 0.5, 1.0)])
    assert r.failures() == ["shard: data/shards/x differs from dvc.lock (1 changed: t.tar)",
                            "embed: data/embeddings/x is missing (run dvc repro)",
                            "evaluate: fd moved +2.5, past its tolerance 2",
                            "train: metric d is not committed"]


def test_outside_a_git_repository_the_check_says_so(tmp_path):
    assert "not a git repository" in error_line(t2i(tmp_path, "check", timeout=300))


# --------------------------------------------------------------------------- a tiny workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny project reproduced, its machine recorded, all committed."""
    p = make_project(tmp_path_factory.mktemp("check") / "p", git=True)
    dvc(p, "repro")
    assert t2i(p, "check", "--record", timeout=300).returncode == 0
    run(p, "git", "add", "-A")
    run(p, "git", "commit", "-qm", "reproduced")
    return p


def check(p, *args, env: dict | None = None):
    old = {k: os.environ.get(k) for k in PINNED_ISA}
    for k in PINNED_ISA:
        os.environ.pop(k, None)
    os.environ.update(env or {})
    try:
        return t2i(p, "check", *args, timeout=600)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.mark.slow
def test_an_untouched_workspace_passes(workspace):
    tracked = subprocess.run(["git", "ls-files"], cwd=workspace, capture_output=True, text=True).stdout.split()
    assert {EVAL, f"data/train/{DATASET}/metrics.json", f"data/grounding/{DATASET}/metrics.json",
            "dvc.lock", "dvc.lock.cpu.json"} <= set(tracked)  # the committed metrics are git's
    r = check(workspace)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the same kind" in r.stdout and "reproduce HEAD's dvc.lock" in r.stdout


@pytest.mark.slow
def test_a_changed_shard_byte_fails(workspace):
    tar = sorted((workspace / "data" / "shards" / DATASET).glob("*.tar"))[0]
    data = tar.read_bytes()
    tar.unlink()  # a new file: DVC's cache may share the old one's blocks
    tar.write_bytes(data[:2000] + bytes([data[2000] ^ 1]) + data[2001:])
    try:
        line = error_line(check(workspace))
    finally:
        tar.unlink()
        tar.write_bytes(data)
    assert line.startswith("error: check failed (1): shard: data/shards/") and tar.name in line


@pytest.mark.slow
def test_on_another_cpu_kind_metrics_within_tolerance_pass_and_past_it_fail(workspace):
    """Rerun everything with the kernels pinned to AVX2: download, shard and embed must keep
    their bytes; the trained stages' bytes change, and their metrics are held to tolerances
    written from how far they moved (2x passes, half of the largest move fails)."""
    committed = flatten(json.loads(subprocess.run(["git", "show", f"HEAD:{EVAL}"], cwd=workspace,
                                                  capture_output=True, text=True, check=True).stdout))
    os.environ.update(PINNED_ISA)
    try:
        dvc(workspace, "repro", "-f")
    finally:
        for k in PINNED_ISA:
            os.environ.pop(k)
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    if lock["train"] == yaml.safe_load(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=workspace,
                                                      capture_output=True, text=True).stdout)["stages"]["train"]:
        pytest.skip("this CPU's own kernels are the pinned ones: no other kind to stand in for")
    now = flatten(json.loads((workspace / EVAL).read_text()))
    moved = {k: abs(now[k] - committed[k]) for k in committed if k in now and now[k] != committed[k]}
    assert moved, "the pinned kernels moved no metric of the evaluate stage"
    key = max(moved, key=moved.get)
    (workspace / "wide.yaml").write_text(yaml.safe_dump({"evaluate": {k: 2 * v for k, v in moved.items()}}))
    r = check(workspace, "--tolerances", "wide.yaml", env=PINNED_ISA)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "another kind" in r.stdout and "differs (metrics decide)" in r.stdout
    for stage in ("download", "shard", "embed"):
        assert any(line.startswith(stage) and line.endswith(" ok") for line in r.stdout.splitlines()), r.stdout
    (workspace / "tight.yaml").write_text(yaml.safe_dump({"evaluate": {key: moved[key] / 2}}))
    line = error_line(check(workspace, "--tolerances", "tight.yaml", env=PINNED_ISA))
    assert line.startswith(f"error: check failed (1): evaluate: {key} moved "), line
