"""The GPU check (issues 8, 11 and 20): prepared on the CPU, run once on a lent GPU machine.

That machine has PyTorch and sentence-transformers but not dvclive, DVC, webdataset, pydantic
(carried as wheels by scripts/gpu-check.sh), perhaps not typer, and not the all-MiniLM-L6-v2
weights (88 MB, more than a call may carry). So this script imports only the ``t2i`` library
(no stage adapter, no DVCLive), and every text the run embeds comes from a table:

- ``prepare TABLE`` (here) embeds, with the real text encoder, every text the run embeds: it
  runs the data phase itself and records what it encodes (the captions and the attribute
  probes), and adds every caption the ``phrasing`` metric can write for the test flowers;
- ``run OUT`` (there) runs phases, each timed and recorded in OUT/run.json as it ends; a phase
  that fails records its reason and the next one still runs; past ``--limit`` seconds the phase
  under way is stopped and the rest are recorded as not run:

  versions  python, torch, CUDA, cuDNN and the card;
  tests     tests/test_gpu.py alone (CI runs the CPU tests);
  data      draw and shard the dataset, embed it by looking its captions up in the table;
  bench-N   ``t2i bench`` rows at batch N, ngf = ndf = ``--width``, "train from shards" among
            them (fed by ``train.workers`` loader processes) -> bench-N.json;
  train     the ground stage (where the levers read it), the evaluator, a training run at the
            params' width and evaluate (all metrics, phrasing too, with the table as its
            encoder) -> metrics.json, grid.png;
  profile   the top kernels of profiled steps at the largest batch -> profile.txt.

Every ``-S key=value`` overrides params.yaml (the test runs this on the CPU with a tiny profile,
with dvclive, typer and the MiniLM package made unimportable, as they are there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from t2i import T2IError  # noqa: E402
from t2i.params import load_params  # noqa: E402


def make_data(p, data: Path, encode, dim: int) -> dict:
    """The download, shard and embed stages' library calls into ``data``: ``encode(texts)`` is
    the text encoder (the real one in ``prepare``, the table in ``run``)."""
    from t2i.data.embed import embed_shards
    from t2i.data.raw import read_raw
    from t2i.data.shards import write_shards
    from t2i.data.sources import prepare_raw
    from t2i.paths import Artifacts

    at = Artifacts(data, p.dataset)
    shutil.rmtree(data, ignore_errors=True)
    prepare_raw(at.raw, p, progress=False)
    s = p.shard
    write_shards(read_raw(at.raw), at.shards, dataset=p.dataset, image_size=s.image_size,
                 image_format=s.image_format, jpeg_quality=s.jpeg_quality,
                 samples_per_shard=s.samples_per_shard, crop=s.crop)
    m = embed_shards(at.shards, at.embeddings, encode, model=p.embed.model, dim=dim)
    return {"counts": {k: v["count"] for k, v in m["splits"].items()}}


def phrasing_texts(p) -> set[str]:
    """Every caption the phrasing metric can write for the test flowers of ``p.synth`` (each
    novel template for each one's attributes)."""
    from t2i.data import synth
    from t2i.metrics.phrasing import NOVEL_TEMPLATES

    s, out = p.synth, set()
    for x in synth.flowers(s.num_images, s.render_size, s.seed, s.test_fraction):
        if x.split == "test":
            a = x.meta["attributes"]  # the words phrasing.novel_captions fills in
            words = dict(p=a["petal_colour"], c=a["centre_colour"], s=a["petal_shape"],
                         n=synth.NUMBER_WORDS.get(a["petal_count"], str(a["petal_count"])))
            out.update(t.format(**words) for t in NOVEL_TEMPLATES)
    return out


def prepare(table: Path, sets: list[str]) -> None:
    """Embed every text the run will ask for: what the data phase embeds (captions and attribute
    probes, recorded by running it here with the real encoder) and the phrasing metric's captions."""
    import tempfile

    from t2i.text import TextEncoder

    p = load_params(ROOT / "params.yaml", sets)
    encoder, seen = TextEncoder(p.embed.model, "cpu", p.embed.batch_size, p.embed.precision), set()

    def recording(texts: list[str]) -> np.ndarray:
        seen.update(texts)
        return encoder.encode(texts)

    with tempfile.TemporaryDirectory() as tmp:
        make_data(p, Path(tmp) / "data", recording, encoder.dim)
    texts = sorted(seen | phrasing_texts(p))
    vectors = encoder.encode(texts)
    table.parent.mkdir(parents=True, exist_ok=True)
    np.savez(table, captions=np.array(texts), vectors=vectors, model=np.array(p.embed.model))
    print(f"prepare: {len(texts)} captions x {vectors.shape[1]} -> {table}")


class TimeUp(Exception):
    pass


class Phases:
    """Runs named phases; after each one rewrites OUT/run.json (atomically) with its outcome."""

    def __init__(self, out: Path, limit: float) -> None:
        self.out, self.report, self.expired = out, {"phases": {}}, False

        def stop(signum, frame):
            self.expired = True
            raise TimeUp(f"stopped by the {limit:.0f} s time limit" if signum == signal.SIGALRM
                         else f"stopped by signal {signum}")

        signal.signal(signal.SIGALRM, stop)
        signal.signal(signal.SIGTERM, stop)  # what `timeout` sends first
        signal.setitimer(signal.ITIMER_REAL, limit)

    def __call__(self, name: str, fn) -> None:
        record = {"ok": False}
        if self.expired:
            record["error"] = "not run: the time limit was reached earlier"
        else:
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                record.update(ok=True, **(fn() or {}))
            except (Exception, TimeUp) as e:  # recorded; the next phase still runs
                record["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                traceback.print_exc()
            record["seconds"] = round(time.perf_counter() - t0, 2)
            print(f"== {name}: {'ok' if record['ok'] else record['error']} ({record['seconds']} s)", flush=True)
        self.report["phases"][name] = record
        tmp = self.out / "run.json.tmp"
        tmp.write_text(json.dumps(self.report, indent=2))
        tmp.replace(self.out / "run.json")


def versions(device: str) -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
         "device": device, "card": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"}
    print(json.dumps(v), flush=True)
    return v


def gpu_tests() -> dict:
    """tests/test_gpu.py alone, in a subprocess; its summary line is the result."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    print(r.stdout[-4000:], r.stderr[-2000:], sep="\n", flush=True)
    summary = (r.stdout.strip().splitlines() or [""])[-1]
    if r.returncode not in (0, 5):  # 5: every test skipped or none collected (a CPU rehearsal)
        raise RuntimeError(f"pytest exit {r.returncode}: {summary}")
    return {"summary": summary}


def run(out: Path, table: Path, sets: list[str], batches: list[int], width: int, seconds: float, limit: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    p = load_params(ROOT / "params.yaml", sets)
    device = p.train.device
    data = Path(os.environ.get("GPU_CHECK_DATA", "/tmp/gpu-check-data"))
    phase = Phases(out, limit)
    phase("versions", lambda: versions(device))
    phase("tests", gpu_tests)

    from t2i.data.loader import embedded_urls
    from t2i.paths import Artifacts

    at = Artifacts(data, p.dataset)
    saved: dict = {}

    def load_table() -> dict:  # read when first needed: a missing table fails the phases that need it
        if not saved:
            with np.load(table) as f:
                saved.update(model=str(f["model"]), lookup=dict(zip(f["captions"].tolist(), f["vectors"])),
                             dim=f["vectors"].shape[1])
        return saved

    def encode(texts: list[str]) -> np.ndarray:  # what the text encoder returns, from the table
        load_table()
        if saved["model"] != p.embed.model or not all(t in saved["lookup"] for t in texts):
            raise T2IError(f"{table} does not hold this dataset's {p.embed.model} captions: rerun "
                           "scripts/gpu_check.py prepare with the same -S overrides")
        return np.stack([saved["lookup"][t] for t in texts])

    phase("data", lambda: make_data(p, data, encode, load_table()["dim"]))

    def at_width(batch: int):  # the train params of the bench, profile and compile phases
        return p.train.model_copy(update={"batch_size": batch, "ngf": width, "ndf": width})

    def bench_at(batch: int):
        def fn() -> dict:  # the params' fast path against fp32 eager, at width ``width``
            from t2i import bench

            cfg = at_width(batch)
            try:  # with the shards, the "train from shards" and loader rows too
                urls = embedded_urls(at.embeddings, "train")
            except T2IError:
                urls = None
            r = bench.run(cfg, urls=urls, image_size=p.shard.image_size, device=device, seconds=seconds,
                          ground=p.ground)
            (out / f"bench-{batch}.json").write_text(json.dumps(r, indent=2))
            print(bench.table(r), flush=True)
            return {k: r["train"][k] for k in ("img_s", "fp32_eager_img_s", "speedup", "peak_share")}
        return fn

    for batch in batches:
        phase(f"bench-{batch}", bench_at(batch))

    def train() -> dict:  # the ground, evaluator, train and evaluate stages without DVCLive
        from t2i import probes
        from t2i.checkpoint import CHECKPOINT, load_discriminator, load_generator
        from t2i.data.shards import read_manifest
        from t2i.evaluate import evaluate
        from t2i.evaluator import load_evaluator, train_evaluator
        from t2i.gan import needs_grounding
        from t2i.ground import load_grounding, train_grounding
        from t2i.train import DataSpec, training_loop

        r, ground = {}, None
        if needs_grounding(p.train):  # the ground stage, as dvc repro runs it before train
            t0 = time.perf_counter()
            train_grounding(embedded_urls(at.embeddings, "train"), at.grounding_dir, p.ground, device=device,
                            progress=False)
            r["ground_s"] = time.perf_counter() - t0
            ground = load_grounding(at.grounding, device)
        t0 = time.perf_counter()
        train_evaluator(embedded_urls(at.embeddings, "train"), at.evaluator, p.evaluator, device=device,
                        progress=False)
        r["evaluator_s"] = time.perf_counter() - t0
        m = read_manifest(at.embeddings)
        spec = DataSpec(emb_dim=m["emb_dim"], image_size=m["image_size"], text_model=m["text_model"],
                        num_samples=m["splits"]["train"]["count"])
        t0 = time.perf_counter()
        r["summary"] = training_loop(embedded_urls(at.embeddings, "train"), at.models, p.train, data=spec,
                                     checkpoint_dir=at.checkpoints, ground=ground, progress=False)
        r["train_s"] = time.perf_counter() - t0
        r["epoch_s"] = r["train_s"] / p.train.epochs
        G, _ = load_generator(at.generator, device)
        D = load_discriminator(at.checkpoints / CHECKPOINT, device)
        metrics = evaluate(G, load_evaluator(at.evaluator, device), embedded_urls(at.embeddings, "test"), at.eval,
                           p.evaluate, device=device, encode=encode, probes=probes.load_probes(at.embeddings),
                           discriminator=D)
        shutil.copy(at.metrics, out / "metrics.json")
        shutil.copy(at.eval / "grid.png", out / "grid.png")
        return {**r, "skipped": metrics["skipped"], "params": p.train.model_dump()}

    phase("train", train)

    def profile() -> dict:  # where one step's time goes, at the largest batch
        from torch.profiler import ProfilerActivity, profile

        from t2i.data.loader import batches as stream
        from t2i.bench import trainables_for
        from t2i.gan import gan_step, step_inputs

        cfg = at_width(max(batches))
        urls = embedded_urls(at.embeddings, "train")
        first = next(stream(urls, cfg.batch_size, drop_last=False))
        t = trainables_for(cfg, first["emb"].shape[-1], first["image"].shape[-1], device, p.ground)
        x = step_inputs(first, cfg, torch.Generator(), device, t)
        for _ in range(3):
            gan_step(t, x, cfg)
        cuda = device.startswith("cuda")
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            for _ in range(5):
                gan_step(t, x, cfg)
            if cuda:
                torch.cuda.synchronize()
        key = "cuda_time_total" if cuda else "cpu_time_total"
        (out / "profile.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=25))
        return {"batch_size": cfg.batch_size}

    phase("profile", profile)

    def compiled() -> dict:  # last: torch.compile's modes (reduce-overhead = CUDA graphs) against eager
        from t2i import bench

        if not device.startswith("cuda"):
            return {"skipped": "needs CUDA (CUDA graphs)"}
        cfg = at_width(max(batches))
        r = bench.compile_rates(cfg, image_size=p.shard.image_size, device=device, seconds=seconds, ground=p.ground)
        return {**r, **{f"{m}_ratio": r[m] / r["eager"] for m in ("default", "reduce-overhead")}}

    phase("compile", compiled)
    signal.setitimer(signal.ITIMER_REAL, 0)
    failed = [k for k, v in phase.report["phases"].items() if not v["ok"]]
    print(f"gpu-check: {len(phase.report['phases']) - len(failed)} phases ok"
          + (f", failed: {', '.join(failed)}" if failed else "") + f" -> {out}", flush=True)
    if failed:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["prepare", "run"])
    ap.add_argument("path", type=Path, help="prepare: the caption table to write; run: the results folder")
    ap.add_argument("--table", type=Path, default=ROOT / ".gpu" / "captions.npz", help="run: the caption table")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="run: bench batch sizes")
    ap.add_argument("--seconds", type=float, default=3.0, help="run: timed seconds per bench row")
    ap.add_argument("--width", type=int, default=64, help="run: ngf = ndf of the bench and the profile")
    ap.add_argument("--limit", type=float, default=540.0, help="run: seconds before the phase under way is stopped")
    ap.add_argument("-S", dest="sets", action="append", default=[], help="a param override, key=value")
    a = ap.parse_args()
    try:
        if a.command == "prepare":
            prepare(a.path, a.sets)
        else:
            run(a.path, a.table, a.sets, a.batches, a.width, a.seconds, a.limit)
    except T2IError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
