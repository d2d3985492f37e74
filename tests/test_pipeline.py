"""End to end: `dvc repro` on a tiny profile, no-op rerun, selective rerun, bit-for-bit reproducibility."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.project import dvc, make_project, outs, run

pytestmark = pytest.mark.slow  # whole-pipeline runs: make test-fast skips them


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    p = make_project(tmp_path_factory.mktemp("e2e") / "a")
    log = dvc(p, "repro")
    for stage in ("download", "shard", "embed", "ground", "train", "evaluator", "evaluate"):
        assert f"Running stage '{stage}'" in log
    return p


def test_repro_builds_shards_and_embeddings(project):
    data = project / "data"
    assert (data / "raw/synthetic-flowers/samples.jsonl").is_file()
    shards = sorted((data / "shards/synthetic-flowers").glob("*.tar"))
    embedded = sorted((data / "embeddings/synthetic-flowers").glob("*.tar"))
    assert shards and [p.name for p in shards] == [p.name for p in embedded]
    lock = outs(project / "dvc.lock")
    folders = ("raw", "shards", "embeddings", "models", "checkpoints", "evaluator")
    assert set(lock) == {f"data/{d}/synthetic-flowers" for d in folders} | {
        f"data/train/synthetic-flowers/{f}" for f in ("plots", "samples", "metrics.json")} | {
        f"data/eval/synthetic-flowers/{f}" for f in ("grid.png", "interpolation.png", "metrics.json")} | {
        f"data/grounding/synthetic-flowers/{f}" for f in ("ground.pt", "metrics.json")}
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
    assert "Running stage 'download'" not in log
    assert "Running stage 'shard'" in log and "Running stage 'embed'" in log and "Running stage 'train'" in log


@pytest.fixture(scope="module")
def git_project(tmp_path_factory) -> Path:
    """A git + DVC project whose pipeline has run and whose dvc.lock and metrics files (git's,
    not DVC's: ``cache: false``) are committed."""
    p = make_project(tmp_path_factory.mktemp("git") / "p", git=True)
    dvc(p, "repro")
    run(p, "git", "add", "-A")
    run(p, "git", "commit", "-qm", "repro")
    return p


def test_push_clone_pull_reproduces_nothing(git_project, tmp_path):
    """Share the outputs through a DVC remote (a local folder here; S3, GCS, SSH alike): a fresh
    clone pulls them and finds the pipeline up to date."""
    remote = tmp_path / "remote"
    dvc(git_project, "remote", "add", "-d", "shared", str(remote))
    run(git_project, "git", "commit", "-qam", "remote")
    dvc(git_project, "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(git_project), str(clone))
    dvc(clone, "pull")
    assert "up to date" in dvc(clone, "status").lower()
    log = dvc(clone, "repro")
    assert "Running stage" not in log
    assert outs(clone / "dvc.lock") == outs(git_project / "dvc.lock")
    assert (clone / "data/models/synthetic-flowers/generator.pt").read_bytes() == \
        (git_project / "data/models/synthetic-flowers/generator.pt").read_bytes()


def test_exp_run_reads_string_floats(git_project):
    """`dvc exp run -S train.lr=1e-03`: PyYAML reads 1e-03 as a string; the stage gets a float."""
    project = git_project
    log = dvc(project, "exp", "run", "-S", "train.lr=1e-03")
    assert "Running stage 'train'" in log and "Running stage 'download'" not in log
    import torch

    config = torch.load(project / "data/models/synthetic-flowers/generator.pt", weights_only=True)["config"]
    assert config["lr"] == 0.001 and isinstance(config["lr"], float)


def test_exp_run_trains_and_scores_df_gan(git_project):
    """`dvc exp run -S train.arch=df-gan`: only train and evaluate rerun; evaluate, generate and
    the family-blind readers take the DF-GAN generator without being told."""
    import json
    import subprocess
    import sys

    import torch

    log = dvc(git_project, "exp", "run", "-S", "train.arch=df-gan", "-S", "train.epochs=1",
              "-S", "train.df_gan.ngf=4", "-S", "train.df_gan.ndf=4")
    assert "Running stage 'train'" in log and "Running stage 'evaluate'" in log
    assert "Running stage 'embed'" not in log and "Running stage 'evaluator'" not in log
    model = git_project / "data/models/synthetic-flowers/generator.pt"
    config = torch.load(model, weights_only=True)["config"]
    assert config["arch"] == "df-gan" and config["df_gan"]["ngf"] == 4 and "ms_coef" not in config
    metrics = json.loads((git_project / "data/eval/synthetic-flowers/metrics.json").read_text())
    assert 0 <= metrics["attr/mean/fake"] <= 1
    r = subprocess.run([sys.executable, "-m", "stages.cli", "generate", "a red flower", "--out", "df.png"],
                       cwd=git_project, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert (git_project / "df.png").stat().st_size > 0


def test_exp_run_with_every_lever_generates_from_generator_pt_alone(git_project):
    """`dvc exp run` with the grounded code, the matching loss, hard wrong captions and AC-GAN's
    heads: train and evaluate rerun on the ground stage's output, and `t2i generate` draws from
    generator.pt alone (it carries the text head)."""
    import json
    import subprocess
    import sys

    import torch

    log = dvc(git_project, "exp", "run", "-S", "train.text=grounded", "-S", "train.match_coef=0.5",
              "-S", "train.wrong=hard", "-S", "train.ac_coef=0.5", "-S", "train.d_contrast_coef=0.5")
    assert "Running stage 'train'" in log and "Running stage 'evaluate'" in log
    assert "Running stage 'embed'" not in log and "Running stage 'ground'" not in log
    model = git_project / "data/models/synthetic-flowers/generator.pt"
    blob = torch.load(model, weights_only=True)
    assert blob["config"]["text"] == "grounded" and "text_head" in blob
    metrics = json.loads((git_project / "data/eval/synthetic-flowers/metrics.json").read_text())
    assert 0 <= metrics["d_check/centre_colour"] <= 1 and 0 <= metrics["attr/mean/fake"] <= 1
    r = subprocess.run([sys.executable, "-m", "stages.cli", "generate", "a red flower", "--out", "g.png"],
                       cwd=git_project, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert (git_project / "g.png").stat().st_size > 0


def test_exp_run_trains_on_two_processes(git_project):
    """`dvc exp run -S train.nproc_per_node=2`: the train stage starts torchrun itself (two gloo
    processes here), with synchronised BatchNorm and two loader workers per process; each
    process takes the same steps per epoch, one summary is printed, rank 0 writes."""
    import torch

    log = dvc(git_project, "exp", "run", "-S", "train.arch=gan-cls", "-S", "train.nproc_per_node=2",
              "-S", "train.sync_bn=true", "-S", "train.workers=2")
    assert "Running stage 'train'" in log and "train: torchrun --standalone --nproc-per-node=2" in log
    assert log.count(" steps, ") == 1  # one summary, from rank 0
    ckpt = torch.load(git_project / "data/checkpoints/synthetic-flowers/checkpoint.pt", weights_only=False)
    config = ckpt["config"]
    assert config["world_size"] == 2 and config["sync_bn"] is True and "nproc_per_node" not in config
    assert ckpt["step"] == config["epochs"] * (config["num_samples"] // 2 // config["batch_size"]) > 0
    assert len(ckpt["rng_ranks"]) == 2
