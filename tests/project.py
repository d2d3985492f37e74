"""A throwaway copy of the project (code, dvc.yaml, tiny params) and DVC/git runners for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synth": {"num_images": 36, "render_size": 48},
    "shard": {"image_size": 32, "samples_per_shard": 16},
    "embed": {"batch_size": 64},
    "ground": {"epochs": 1, "batch_size": 8, "dim": 8, "hidden": 16, "width": 8, "glimpses": 2, "threads": 1},
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


def make_project(where: Path, git: bool = False, params: dict | None = None) -> Path:
    """``where`` with the code, dvc.yaml and params.yaml (TINY, then ``params``, over the repo's)."""
    where.mkdir()
    for name in ("t2i", "stages"):
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "tolerances.yaml"):
        shutil.copy(ROOT / name, where / name)
    merged = merge(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY), params or {})
    (where / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
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
