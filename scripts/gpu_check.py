"""The GPU check (issues 8 and 11): prepared on the CPU, run once on a lent GPU machine.

That machine has PyTorch, typer and sentence-transformers but no DVC, no registry and no
all-MiniLM-L6-v2 weights (88 MB, more than a call may carry). So:

- ``prepare TABLE`` (here) embeds every distinct caption of the default synthetic dataset with
  the real text encoder (7,816 captions, about 12 MB);
- ``run OUT`` (there, from scripts/gpu-check.sh) draws and shards the same dataset with the
  ``t2i`` stages, embeds it by looking the captions up in that table (the vectors the embed
  stage would write), then: ``t2i bench`` figures at batch 64 and 256 (ngf = ndf = 64, fp32
  eager against bf16 + channels_last), a training run at width 64 (ngf = ndf = 64) through the
  evaluator and evaluate stages, and a profile of one step. Results go to OUT: bench-64.json,
  bench-256.json, run.json, metrics.json, grid.png, profile.txt.

Every ``-S key=value`` after the command overrides params.yaml for the stages (the test runs it
on the CPU with a tiny profile).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from t2i import T2IError  # noqa: E402
from t2i.params import load_params  # noqa: E402


def captions(p) -> list[str]:
    """The distinct captions of the synthetic dataset ``p.synth`` draws, sorted."""
    from t2i.data import synth

    s = p.synth
    return sorted({c for x in synth.flowers(s.num_images, s.render_size, s.seed, s.test_fraction) for c in x.captions})


def prepare(table: Path, sets: list[str]) -> None:
    from t2i.text import TextEncoder

    p = load_params(ROOT / "params.yaml", sets)
    texts = captions(p)
    vectors = TextEncoder(p.embed.model, "cpu", p.embed.batch_size).encode(texts)
    table.parent.mkdir(parents=True, exist_ok=True)
    np.savez(table, captions=np.array(texts), vectors=vectors, model=np.array(p.embed.model))
    print(f"prepare: {len(texts)} captions x {vectors.shape[1]} -> {table}")


def stage(name: str, data: Path, sets: list[str]) -> None:
    args = [a for s in sets for a in ("-S", s)]
    subprocess.run([sys.executable, "-m", "stages.cli", name, "--data", str(data), *args], cwd=ROOT, check=True)


def run(out: Path, table: Path, sets: list[str], batches: list[int], width: int, seconds: float) -> None:
    from t2i import bench
    from t2i.data.embed import embed_shards
    from t2i.data.loader import batches as stream
    from t2i.data.loader import embedded_urls
    from t2i.data.shards import read_manifest
    from t2i.paths import Artifacts
    from t2i.train import DataSpec, training_loop

    out.mkdir(parents=True, exist_ok=True)
    p = load_params(ROOT / "params.yaml", sets)
    device = p.train.device
    data = Path(os.environ.get("GPU_CHECK_DATA", "/tmp/gpu-check-data"))
    at = Artifacts(data, p.dataset)
    shutil.rmtree(data, ignore_errors=True)
    report: dict = {"torch": torch.__version__, "device": device,
                    "card": torch.cuda.get_device_name() if device == "cuda" else "cpu"}

    t0 = time.perf_counter()
    stage("download", data, sets)
    stage("shard", data, sets)
    saved = np.load(table)
    lookup = dict(zip(saved["captions"].tolist(), saved["vectors"]))

    def encode(texts: list[str]) -> np.ndarray:  # what the embed stage's encoder returns, from the table
        if str(saved["model"]) != p.embed.model or not all(t in lookup for t in texts):
            raise T2IError(f"{table} does not hold this dataset's {p.embed.model} captions: rerun "
                           "scripts/gpu_check.py prepare with the same -S overrides")
        return np.stack([lookup[t] for t in texts])

    embed_shards(at.shards, at.embeddings, encode, model=p.embed.model,
                 dim=saved["vectors"].shape[1])
    report["data_s"] = time.perf_counter() - t0

    for batch in batches:  # fp32 eager against the params' fast path, at width 64
        cfg = p.train.model_copy(update={"batch_size": batch, "ngf": width, "ndf": width})
        r = bench.run(cfg, image_size=p.shard.image_size, device=device, seconds=seconds)
        (out / f"bench-{batch}.json").write_text(json.dumps(r, indent=2))
        print(bench.table(r), flush=True)
        report[f"bench_{batch}"] = {k: r["train"][k] for k in ("img_s", "fp32_eager_img_s", "speedup", "peak_share")}

    t0 = time.perf_counter()
    stage("evaluator", data, sets)
    report["evaluator_s"] = time.perf_counter() - t0
    src = at.embeddings
    manifest = read_manifest(src)
    spec = DataSpec(emb_dim=manifest["emb_dim"], image_size=manifest["image_size"], text_model=manifest["text_model"],
                    num_samples=manifest["splits"]["train"]["count"])
    t0 = time.perf_counter()  # the train stage without DVCLive (not installed there)
    summary = training_loop(embedded_urls(src, "train"), at.models, p.train, data=spec,
                            checkpoint_dir=at.checkpoints)
    report["train_s"] = time.perf_counter() - t0
    report["epoch_s"] = report["train_s"] / p.train.epochs
    report["train"] = {**summary, "params": p.train.model_dump()}
    stage("evaluate", data, sets)
    metrics = at.metrics
    report["metrics"] = json.loads(metrics.read_text())
    shutil.copy(metrics, out / "metrics.json")
    shutil.copy(at.eval / "grid.png", out / "grid.png")

    # Where one step's time goes: the top kernels of profiled steps at the largest batch.
    from torch.profiler import ProfilerActivity, profile

    from t2i.gan import gan_step, model_config, step_inputs, trainables

    cfg = p.train.model_copy(update={"batch_size": max(batches), "ngf": width, "ndf": width})
    t = trainables(cfg, model_config(cfg, spec.emb_dim, spec.image_size), device)
    x = step_inputs(next(stream(embedded_urls(src, "train"), cfg.batch_size, drop_last=False)), cfg,
                    torch.Generator(), device)
    for _ in range(3):
        gan_step(t, x, cfg)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            gan_step(t, x, cfg)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    (out / "profile.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=25))
    (out / "run.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("metrics", "train")}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["prepare", "run"])
    ap.add_argument("path", type=Path, help="prepare: the caption table to write; run: the results folder")
    ap.add_argument("--table", type=Path, default=ROOT / ".gpu" / "captions.npz", help="run: the caption table")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="run: bench batch sizes")
    ap.add_argument("--seconds", type=float, default=3.0, help="run: timed seconds per bench row")
    ap.add_argument("--width", type=int, default=64, help="run: ngf = ndf of the bench and the profile")
    ap.add_argument("-S", dest="sets", action="append", default=[], help="a param override, key=value")
    a = ap.parse_args()
    try:
        prepare(a.path, a.sets) if a.command == "prepare" else run(a.path, a.table, a.sets, a.batches, a.width, a.seconds)
    except T2IError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
