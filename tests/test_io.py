"""Atomic outputs: a kill -9 at any point leaves the old output or the new one, never neither,
and the next write removes what the killed one left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from t2i.io import atomic_dir, atomic_file


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_next_write_removes_temporaries_of_dead_writers_only(tmp_path):
    out = tmp_path / "shards"
    stale_dir = tmp_path / f".shards.{dead_pid()}.abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "big.tar").write_bytes(b"x" * 1000)
    legacy = tmp_path / ".shards.k2j3h4.tmp"  # an older release's name, without a pid
    legacy.mkdir()
    live = tmp_path / f".shards.{os.getpid()}.zzz.tmp"  # a writer that is still running
    live.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("new")
    assert not stale_dir.exists() and not legacy.exists() and live.exists()
    assert (out / "a.txt").read_text() == "new"


def test_a_swap_cut_between_its_renames_is_repaired(tmp_path):
    out = tmp_path / "emb"
    old = tmp_path / ".emb.old"  # killed after moving the old folder aside, before the new one landed
    old.mkdir()
    (old / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out):
            raise RuntimeError("this write fails too")
    assert (out / "a.txt").read_text() == "old" and not old.exists()
    old.mkdir()  # both there: the new folder had landed, the old one is garbage
    with atomic_file(tmp_path / "emb.json") as tmp:
        tmp.write_text("{}")
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new" and not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb", "emb.json"]


@pytest.mark.slow
def test_kill_9_during_a_stage_then_rerun_leaves_nothing_behind(tmp_path):
    """The download stage killed while drawing, then run again: one complete output, no temporaries."""
    (tmp_path / "params.yaml").write_text("synth:\n  num_images: 400\n  render_size: 64\n")
    cmd = [sys.executable, "-c", "from stages.cli import main; main()", "download", "--data", "data"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raw = tmp_path / "data" / "raw"
    deadline = time.monotonic() + 60  # killed as soon as the first image is in the temporary folder:
    while not any(raw.glob(".*.tmp/images/*")) and time.monotonic() < deadline:  # mid-write, on any machine
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert any(raw.glob(".*.tmp")), "the kill came too late to leave a temporary"
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in raw.iterdir()) == ["synthetic-flowers"]
    assert len(list((raw / "synthetic-flowers" / "images").iterdir())) == 400


@pytest.mark.slow
def test_kill_9_during_train_then_rerun_resumes_to_the_same_generator(tmp_path, make_embedded):
    """`t2i train` (the default levers, on a tiny grounding) killed with SIGKILL right after its
    first checkpoint, then run again: it resumes from that checkpoint and ends with the
    generator.pt bytes of an uninterrupted run."""
    from tests.test_cli_errors import DATASET, t2i

    built = make_embedded(tmp_path / "build", 32, samples_per_shard=8)
    tiny = ["-S", "train.epochs=3", "-S", "train.batch_size=4", "-S", "train.ngf=8", "-S", "train.ndf=8",
            "-S", "train.threads=1", "-S", "train.checkpoint_every=3"]
    for run in ("whole", "killed"):
        (tmp_path / run / "data" / "embeddings").mkdir(parents=True)
        shutil.copytree(built, tmp_path / run / "data" / "embeddings" / DATASET)
        (tmp_path / run / "params.yaml").write_text("# the built-in defaults\n")
        ground = ["-S", "ground.epochs=1", "-S", "ground.batch_size=8", "-S", "ground.dim=8", "-S", "ground.hidden=16",
                  "-S", "ground.width=8", "-S", "ground.threads=1"]
        assert t2i(tmp_path / run, "ground", *ground).returncode == 0
    assert t2i(tmp_path / "whole", "train", *tiny).returncode == 0

    cmd = [sys.executable, "-c", "from stages.cli import main; main()", "train", *tiny]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(cmd, cwd=tmp_path / "killed", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "data" / "checkpoints" / DATASET / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    generator = Path("data") / "models" / DATASET / "generator.pt"
    assert ckpt.exists() and not (tmp_path / "killed" / generator).exists(), "the kill came too late"
    rerun = t2i(tmp_path / "killed", "train", *tiny)
    assert rerun.returncode == 0 and "resumed" in rerun.stdout, rerun.stderr
    assert (tmp_path / "killed" / generator).read_bytes() == (tmp_path / "whole" / generator).read_bytes()
