"""scripts/gpu_check.py, the one-shot GPU check, run end to end on the CPU with a tiny profile, so
that the few minutes of a lent GPU are never spent on a broken script."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # whole-pipeline runs: make test-fast skips them

TINY = ["synth.num_images=48", "synth.render_size=32", "shard.image_size=32", "shard.samples_per_shard=16",
        "train.epochs=1", "train.ngf=8", "train.ndf=8", "train.batch_size=8", "evaluator.epochs=1", "train.threads=1"]


def test_gpu_check_runs_end_to_end_on_cpu(tmp_path):
    sets = [a for s in TINY for a in ("-S", s)]
    script = [sys.executable, str(REPO / "scripts" / "gpu_check.py")]
    env = {**os.environ, "GPU_CHECK_DATA": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    table = tmp_path / "captions.npz"
    subprocess.run([*script, "prepare", str(table), *sets], env=env, check=True, capture_output=True)
    r = subprocess.run([*script, "run", str(tmp_path / "out"), "--table", str(table), "--batches", "8", "--width", "8",
                        "--seconds", "0.05", *sets], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["bench-8.json", "grid.png", "metrics.json", "profile.txt", "run.json"]
    report = json.loads((out / "run.json").read_text())
    assert report["bench_8"]["img_s"] > 0 and report["train"]["steps"] > 0
    assert report["metrics"] == json.loads((out / "metrics.json").read_text())
    manifest = json.loads((tmp_path / "data" / "embeddings" / "synthetic-flowers" / "manifest.json").read_text())
    assert manifest["text_model"] == "all-MiniLM-L6-v2" and manifest["emb_dim"] == 384

    # A table made for other captions is refused with a one-line error, not a KeyError.
    r = subprocess.run([*script, "run", str(tmp_path / "out2"), "--table", str(table), *sets, "-S", "synth.seed=1"],
                       env=env, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "rerun scripts/gpu_check.py prepare" in r.stderr
