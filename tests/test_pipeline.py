"""End to end: `dvc repro` on a tiny profile, no-op rerun, selective rerun, bit-for-bit reproducibility."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synth": {"num_images": 36, "render_size": 48},
    "shard": {"image_size": 32, "samples_per_shard": 16},
    "embed": {"batch_size": 64},
    "train": {"epochs": 1, "batch_size": 8, "ngf": 8, "ndf": 8, "z_dim": 16, "proj_dim": 16, "threads": 1,
              "shuffle_buffer": 32},
    "evaluator": {"epochs": 1, "batch_size": 8, "threads": 1},
    "evaluate": {"batch_size": 16, "grid_captions": 2, "grid_noise": 2},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def make_project(where: Path, git: bool = False) -> Path:
    where.mkdir()
    for name in ("t2i", "stages"):
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", where / "dvc.yaml")
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if git:
        shutil.copy(ROOT / ".gitignore", where / ".gitignore")
        run(where, "git", "init", "-q")
        dvc(where, "init", "-q")
        run(where, "git", "add", "-A")
        run(where, "git", "commit", "-qm", "tiny project")
    else:
        dvc(where, "init", "--no-scm", "-q")
    return where


GIT_ID = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
          for what, value in (("NAME", "t2i tests"), ("EMAIL", "tests@t2i.invalid"))}


def run(cwd: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, env={**os.environ, **GIT_ID})


def dvc(cwd: Path, *args: str) -> str:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, **GIT_ID, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
           "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def outs(lock: Path) -> dict:
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {o["path"]: o["md5"] for s in stages.values() for o in s.get("outs", []) if "md5" in o}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    p = make_project(tmp_path_factory.mktemp("e2e") / "a")
    log = dvc(p, "repro")
    for stage in ("synth", "shard", "embed", "train", "evaluator", "evaluate"):
        assert f"Running stage '{stage}'" in log
    return p


def test_repro_builds_shards_and_embeddings(project):
    data = project / "data"
    assert (data / "raw/synthetic-flowers/samples.jsonl").is_file()
    shards = sorted((data / "shards/synthetic-flowers").glob("*.tar"))
    embedded = sorted((data / "embeddings/synthetic-flowers").glob("*.tar"))
    assert shards and [p.name for p in shards] == [p.name for p in embedded]
    lock = outs(project / "dvc.lock")
    assert set(lock) == {f"data/{d}/synthetic-flowers" for d in ("raw", "shards", "embeddings", "models", "train", "checkpoints", "evaluator")} | {
        f"data/eval/synthetic-flowers/{f}" for f in ("grid.png", "interpolation.png", "metrics.json")}
    assert (data / "models/synthetic-flowers/generator.pt").is_file()
    assert (data / "train/synthetic-flowers/samples/epoch_001.png").is_file()


def test_second_repro_does_nothing(project):
    log = dvc(project, "repro")
    assert "Running stage" not in log
    assert "up to date" in log


def test_reproducible_from_scratch(project, tmp_path):
    other = make_project(tmp_path / "b")
    dvc(other, "repro")
    assert outs(other / "dvc.lock") == outs(project / "dvc.lock")
    assert (other / "dvc.lock").read_text() == (project / "dvc.lock").read_text()


def test_image_size_change_reruns_from_shard_on(project, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(project, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["shard"]["image_size"] = 64
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = dvc(copy, "repro")
    assert "Running stage 'synth'" not in log
    assert "Running stage 'shard'" in log and "Running stage 'embed'" in log and "Running stage 'train'" in log


def test_exp_run_reads_string_floats(tmp_path):
    """`dvc exp run -S train.lr=1e-03`: PyYAML reads 1e-03 as a string; the stage gets a float."""
    project = make_project(tmp_path / "exp", git=True)
    dvc(project, "repro")
    log = dvc(project, "exp", "run", "-S", "train.lr=1e-03")
    assert "Running stage 'train'" in log and "Running stage 'synth'" not in log
    import torch

    config = torch.load(project / "data/models/synthetic-flowers/generator.pt", weights_only=True)["config"]
    assert config["lr"] == 0.001 and isinstance(config["lr"], float)
