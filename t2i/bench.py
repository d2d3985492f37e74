"""``t2i bench``: how fast each part of the pipeline runs on this machine, measured in one run.

Every row compares two things timed in the same process, so the ratios hold even on a loaded
machine whose absolute numbers do not:

- ``train``: images/s of ``gan.gan_step`` with the given params (precision, channels_last,
  compile) against the same step in fp32 eager, at the params' width and at the GPU width
  ngf = ndf = 64 (``WIDE``); the step's FLOPs per image (``torch.utils.flop_counter``) and the share of
  this machine's measured matmul peak (in the params' precision) the step achieves;
- ``family``: every built-in model family's fp32 eager step at its params.yaml widths (GAN-CLS:
  ``train.ngf/ndf``, DF-GAN: ``train.df_gan.ngf/ndf``), images/s and FLOPs per image;
- ``shards``: images/s of the training loop's step fed from the shards (loader, random draws,
  upload, ``gan_step``) against the same step on one fixed batch: what the input path costs;
- ``load``: batches/s the training loader delivers alone, against what the trainer consumes;
- ``shard``: images/s decoding, cropping, resizing and writing full-size (500x375) JPEGs;
- ``embed``: captions/s of the embed stage's path (each distinct caption encoded once, sorted)
  against plain ``SentenceTransformer.encode`` on the same captions, and the cosine similarity
  of the two outputs; and plain encode in ``embed.precision`` against fp32;
- ``memory``: the peak resident memory of a short training run in a fresh process.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2i.families import BUILT_IN
from t2i.gan import gan_step, model_config, needs_grounding, step_inputs, trainables
from t2i.params import LEVERS_OFF, GroundParams, TrainParams

WIDE = 64  # the width of the GPU measurements (ngf = ndf; Reed et al.'s own is ngf 128, ndf 64)


def _rate(fn, units: int, seconds: float = 3.0, warmup: int = 3, device: str = "cpu") -> float:
    """``units`` per second of ``fn()``, timed for about ``seconds`` after ``warmup`` calls (on a
    GPU, waiting for the queued kernels before each clock reading)."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):  # allocator and kernel caches settle
        fn()
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 2:
        fn()
        n += 1
        if n % 10 == 0:
            sync()  # keeps the queue, and so the clock, honest
    sync()
    return n * units / (time.perf_counter() - start)


def fake_batch(batch: int, size: int, emb_dim: int, captions: int = 10, seed: int = 0) -> dict:
    """A loader-shaped batch of random images, caption embeddings and classes (free-text
    captions: the levers' guards go by class and words)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
    emb = torch.randn(batch, captions, emb_dim, generator=g)
    class_id = torch.randint(0, 10, (batch,), generator=g)  # drawn in this order since the first bench
    return {"image": image, "emb": emb, "class_id": class_id, "meta": [{"class_id": int(c)} for c in class_id],
            "captions": [[f"caption {c} of sample {i}" for c in range(captions)] for i in range(batch)]}


def stand_in_grounding(cfg: TrainParams, emb_dim: int, image_size: int, ground: GroundParams = GroundParams()):
    """An untrained grounding of the ground stage's shape where ``cfg``'s levers read one (a
    step costs what the grounding's shape costs, whatever its weights), else None."""
    if not needs_grounding(cfg):
        return None
    from t2i.ground import new_grounding

    return new_grounding(ground, emb_dim, image_size)


def trainables_for(cfg: TrainParams, emb_dim: int, image_size: int, device: str = "cpu",
                   ground: GroundParams = GroundParams()):
    """Fresh trainables for ``cfg`` on data of ``emb_dim`` and ``image_size`` (with a stand-in grounding)."""
    grounding = stand_in_grounding(cfg, emb_dim, image_size, ground)
    dim = grounding.config["dim"] if grounding is not None and cfg.text == "grounded" else emb_dim
    return trainables(cfg, model_config(cfg, dim, image_size), device, ground=grounding)


def matmul_peak(dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """Measured FLOP/s of a square matrix product (the machine's practical peak): 1024 on a CPU,
    8192 on a GPU (smaller products leave a GPU's tensor cores idle)."""
    n = 8192 if str(device).startswith("cuda") else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return _rate(lambda: torch.mm(a, b), units=2 * n ** 3, seconds=1.0, device=device)


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker (its private ``mod_tracker``, checked
    on torch 2.13), whose backward hooks break ``torch.autograd.grad`` (DF-GAN's MA-GP); only
    the total is wanted here."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


def flops_of(fn) -> int:
    """FLOPs of the matrix products and convolutions ``fn()`` runs (forward, backward and double backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops()


def base_widths(cfg: TrainParams, image_size: int = 64, emb_dim: int = 384) -> dict:
    """The base widths (ngf, ndf) of the models ``cfg`` builds: each family reads its own params."""
    model_cfg = model_config(cfg, emb_dim, image_size)
    return {"ngf": model_cfg.ngf, "ndf": model_cfg.ndf}


def train_step(cfg: TrainParams, image_size: int = 64, emb_dim: int = 384, device: str = "cpu",
               seconds: float = 3.0, ground: GroundParams = GroundParams()) -> dict:
    """Images/s and FLOPs per image of ``gan_step`` for ``cfg`` (any family, its levers on as
    set) on random inputs."""
    eager = trainables_for(cfg.model_copy(update={"compile": False}), emb_dim, image_size, device, ground)  # counted eager
    x = step_inputs(fake_batch(cfg.batch_size, image_size, emb_dim), cfg, torch.Generator().manual_seed(0), device,
                    eager)
    flops = flops_of(lambda: gan_step(eager, x, cfg))
    t = trainables_for(cfg, emb_dim, image_size, device, ground)
    img_s = _rate(lambda: gan_step(t, x, cfg), cfg.batch_size, seconds, device=device)
    return {"img_s": img_s, "flops_per_img": flops / cfg.batch_size}


def shards_step(cfg: TrainParams, urls: list[str], device: str = "cpu", seconds: float = 3.0,
                ground: GroundParams = GroundParams()) -> float:
    """Images/s of what ``t2i train`` does per step: the next batch from the training loader
    over ``urls`` (built once, ``cfg.workers`` processes, pinned on CUDA), its random draws and
    upload (``step_inputs``), then ``gan_step``; beside ``train_step`` on one fixed batch, the
    gap is what the input path costs."""
    import itertools

    from t2i.data.loader import Loader

    loader = Loader(urls, cfg.batch_size, shuffle=cfg.shuffle_buffer, seed=cfg.seed, workers=cfg.workers,
                    pin_memory=device.startswith("cuda"))
    feed = itertools.chain.from_iterable(loader.epoch(e) for e in itertools.count())
    first = next(feed)
    t = trainables_for(cfg, first["emb"].shape[-1], first["image"].shape[-1], device, ground)
    g = torch.Generator().manual_seed(0)
    return _rate(lambda: gan_step(t, step_inputs(next(feed), cfg, g, device, t), cfg), cfg.batch_size, seconds,
                 device=device)


def compile_rates(cfg: TrainParams, image_size: int = 64, emb_dim: int = 384, device: str = "cpu",
                  seconds: float = 3.0, modes: tuple[str, ...] = ("default", "reduce-overhead"),
                  ground: GroundParams = GroundParams()) -> dict:
    """Images/s of ``gan_step`` on one fixed batch with the pass modules eager and compiled in
    each ``torch.compile`` mode (``reduce-overhead`` captures CUDA graphs: what a launch-bound
    step may gain), timed in one run; and each mode's compile time (its warm-up). Not a
    ``t2i bench`` row: ``scripts/gpu_check.py`` runs it on a GPU, where it may pay."""
    import dataclasses

    eager = cfg.model_copy(update={"compile": False})
    t = trainables_for(eager, emb_dim, image_size, device, ground)
    x = step_inputs(fake_batch(cfg.batch_size, image_size, emb_dim), eager, torch.Generator().manual_seed(0), device, t)
    out = {"eager": _rate(lambda: gan_step(t, x, eager), cfg.batch_size, seconds, device=device)}
    for mode in modes:
        torch._dynamo.reset()  # each mode compiles from scratch
        t = trainables_for(eager, emb_dim, image_size, device, ground)
        passes = ("g_passes", "d_passes", "d_fakes")
        t = dataclasses.replace(t, **{k: torch.compile(getattr(t, k), mode=mode) for k in passes})
        start = time.perf_counter()
        gan_step(t, x, eager)  # compiles
        out[f"{mode}_compile_s"] = time.perf_counter() - start
        out[mode] = _rate(lambda: gan_step(t, x, eager), cfg.batch_size, seconds, device=device)
    return out


def loader_rate(urls: list[str], batch_size: int, workers: int = 0, batches: int = 20) -> float:
    """Batches/s the training loader delivers (shuffled, decoded), reading ``urls`` alone."""
    from t2i.data.loader import batches as stream

    def one_pass() -> int:
        return sum(1 for _ in zip(range(batches), stream(urls, batch_size, shuffle=100, workers=workers)))

    start = time.perf_counter()
    n = one_pass()
    return n / (time.perf_counter() - start)


def shard_rate(n: int = 64, size: tuple[int, int] = (500, 375), image_size: int = 64) -> float:
    """Images/s of the shard stage for CUB-sized JPEGs with a bounding box: read from a raw
    folder, decoded, cropped, resized, encoded and written to tars."""
    from t2i.data.raw import RawWriter, Sample, read_raw
    from t2i.data.shards import write_shards

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        with RawWriter(Path(tmp) / "raw") as raw:
            for i in range(n):
                ramp = np.linspace(0, 190, size[0])[None, :, None]
                pixels = (rng.random((size[1], size[0], 3)) * 60 + ramp).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
                raw.add(Sample(f"bird_{i:05d}", buf.getvalue(), ["a bird"], "train", {"bbox": [120.0, 80.0, 200.0, 150.0]}))
        start = time.perf_counter()
        write_shards(read_raw(Path(tmp) / "raw"), Path(tmp) / "shards", dataset="bench", image_size=image_size,
                     samples_per_shard=32)
        return n / (time.perf_counter() - start)


def embed_rate(captions: list[str], model: str = "all-MiniLM-L6-v2", batch_size: int = 256,
               precision: str | None = None) -> dict:
    """Captions/s of the embed path (distinct captions once, sorted) vs plain encode, and their
    cosine, in ``precision`` (None: embed.precision's default); and plain encode in fp32, the
    price of fp64's same bytes on every CPU."""
    from t2i.data.embed import CaptionCache
    from t2i.text import TextEncoder

    fp32 = TextEncoder(model, "cpu", batch_size, "fp32")
    encoder = TextEncoder(model, "cpu", batch_size, precision)
    for e in (fp32, encoder):
        e.encode(["a warm-up caption"])  # first-call costs count for no side
    start = time.perf_counter()
    fp32.model.encode(captions, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    fp32_s = len(captions) / (time.perf_counter() - start)
    start = time.perf_counter()
    ours = CaptionCache(encoder.encode).lookup(captions)
    ours_s = len(captions) / (time.perf_counter() - start)
    start = time.perf_counter()
    plain = encoder.model.encode(captions, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    plain_s = len(captions) / (time.perf_counter() - start)
    a, b = ours.astype(np.float32), plain.astype(np.float32)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"captions_s": ours_s, "plain_captions_s": plain_s, "min_cosine": float(cos.min()),
            "distinct": len(set(captions)), "captions": len(captions), "precision": encoder.precision,
            "fp32_plain_captions_s": fp32_s}


def peak_rss_of_training(urls: list[str], cfg: TrainParams, emb_dim: int, image_size: int,
                         ground: GroundParams = GroundParams()) -> float:
    """Peak resident memory (MiB) of a one-epoch training run in a fresh process (with a
    stand-in grounding where the levers read one)."""
    code = (
        "import sys, json, resource\n"
        "from t2i.params import TrainParams\n"
        "from t2i.train import DataSpec, training_loop\n"
        "a = json.loads(sys.argv[1])\n"
        "if a['ground']:\n"
        "    from t2i.ground import load_grounding\n"
        "    a['ground'] = load_grounding(a['ground'])\n"
        "training_loop(a['urls'], a['out'], TrainParams(**a['cfg']), data=DataSpec(a['emb_dim'], a['size'], 'bench'),"
        " ground=a['ground'], progress=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    with tempfile.TemporaryDirectory() as tmp:
        grounding = stand_in_grounding(cfg, emb_dim, image_size, ground)
        if grounding is not None:
            from t2i.ground import save_grounding

            save_grounding(grounding, Path(tmp) / "ground.pt")
        arg = json.dumps({"urls": urls, "out": tmp, "cfg": {**cfg.model_dump(), "epochs": 1}, "emb_dim": emb_dim,
                          "size": image_size, "ground": str(Path(tmp) / "ground.pt") if grounding is not None else None})
        r = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True)
    return int(r.stdout.split()[-1]) / 1024  # Linux reports KiB


def run(cfg: TrainParams, *, urls: list[str] | None = None, emb_dim: int = 384, image_size: int = 64,
        captions: list[str] | None = None, device: str = "cpu", seconds: float = 3.0,
        ground: GroundParams = GroundParams(), embed_precision: str | None = None) -> dict:
    """Every row that the inputs allow (``urls``: embedded train shards; ``captions``: for embed).
    Where ``cfg``'s levers read a grounding, the steps run with an untrained one of ``ground``'s shape."""
    from t2i.device import pick_precision

    cfg = cfg.model_copy(update={"precision": pick_precision(cfg.precision, device)})
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    results: dict = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__}
    eager = {"precision": "fp32", "channels_last": False, "compile": False}
    rows: dict[str, dict] = {}
    wide = {"ngf": WIDE, "ndf": WIDE}
    wide = {**wide, "df_gan": cfg.df_gan.model_copy(update=wide)}  # each family's widths: it reads its own
    for _ in range(2):  # two interleaved rounds, the best of each kept: load and warm-up hit both sides
        for name, width in (("here", {}), ("wide", wide)):
            for key, update in ((name, width), (name + "_eager", {**width, **eager})):
                r = train_step(cfg.model_copy(update=update), image_size, emb_dim, device, seconds, ground)
                if r["img_s"] > rows.get(key, {"img_s": 0})["img_s"]:
                    rows[key] = r
        for arch in BUILT_IN:
            r = train_step(cfg.with_arch(arch, **eager), image_size, emb_dim, device, seconds, ground)
            if r["img_s"] > rows.get(arch, {"img_s": 0})["img_s"]:
                rows[arch] = r
    peak = matmul_peak(torch.bfloat16 if cfg.precision == "bf16" else torch.float32, device=device)
    here = rows["here"]
    results["family"] = {arch: {**base_widths(cfg.with_arch(arch), image_size, emb_dim), **rows[arch]}
                         for arch in BUILT_IN}
    levers = {k: getattr(cfg, k) for k, off in LEVERS_OFF.items() if getattr(cfg, k) != off}
    results["train"] = {"arch": cfg.arch, "levers": levers, **base_widths(cfg, image_size, emb_dim),
                        "batch_size": cfg.batch_size, "precision": cfg.precision,
                        "channels_last": cfg.channels_last, "compile": cfg.compile, **here,
                        "fp32_eager_img_s": rows["here_eager"]["img_s"],
                        "speedup": here["img_s"] / rows["here_eager"]["img_s"],
                        "wide_img_s": rows["wide"]["img_s"], "wide_fp32_eager_img_s": rows["wide_eager"]["img_s"],
                        "wide_speedup": rows["wide"]["img_s"] / rows["wide_eager"]["img_s"],
                        "wide_flops_per_img": rows["wide"]["flops_per_img"],
                        "matmul_peak_flops": peak, "peak_share": here["img_s"] * here["flops_per_img"] / peak}
    if urls:  # the step fed from the shards against the step on one fixed batch, in interleaved rounds
        shards = fixed = 0.0
        for _ in range(2):
            fixed = max(fixed, train_step(cfg, image_size, emb_dim, device, seconds, ground)["img_s"])
            shards = max(shards, shards_step(cfg, urls, device, seconds, ground))
        results["shards"] = {"img_s": shards, "fixed_batch_img_s": fixed, "ratio": shards / fixed,
                             "workers": cfg.workers}
        delivered = loader_rate(urls, cfg.batch_size, cfg.workers)
        consumed = here["img_s"] / cfg.batch_size
        results["load"] = {"batches_s": delivered, "trainer_batches_s": consumed, "ratio": delivered / consumed}
        results["memory"] = {"peak_rss_mib": peak_rss_of_training(urls, cfg, emb_dim, image_size, ground)}
    results["shard"] = {"img_s": shard_rate(image_size=image_size), "image_size": image_size}
    if captions:
        results["embed"] = embed_rate(captions, precision=embed_precision)
        results["embed"]["ratio"] = results["embed"]["captions_s"] / results["embed"]["plain_captions_s"]
    results["rss_mib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def table(r: dict) -> str:
    """The results as printed rows (docs/performance.md quotes them)."""
    t = r["train"]
    mode = t["precision"] + (" channels_last" if t["channels_last"] else "") + (" compiled" if t["compile"] else "")
    levers = " ".join(f"{k}={v}" for k, v in t.get("levers", {}).items()) or "no levers"
    rows = [("train", f"{t['arch']} ({levers}): {t['img_s']:.0f} img/s ({mode}) vs {t['fp32_eager_img_s']:.0f} fp32 eager: {t['speedup']:.2f}x "
                      f"at ngf={t['ngf']} ndf={t['ndf']} batch {t['batch_size']}; at width {WIDE}/{WIDE} "
                      f"{t['wide_img_s']:.0f} vs {t['wide_fp32_eager_img_s']:.0f}: {t['wide_speedup']:.2f}x; "
                      f"{t['flops_per_img'] / 1e9:.2f} GFLOP/img, {100 * t['peak_share']:.0f}% of the measured "
                      f"{t['precision']} matmul peak ({t['matmul_peak_flops'] / 1e9:.0f} GFLOP/s)")]
    f = r["family"]
    first = next(iter(f))  # the others are compared with it

    def one(arch: str) -> str:
        a, b = f[arch], f[first]
        versus = "" if arch == first else (f": {a['img_s'] / b['img_s']:.2f}x the img/s, "
                                            f"{a['flops_per_img'] / b['flops_per_img']:.2f}x the FLOPs")
        return (f"{arch} (ngf={a['ngf']} ndf={a['ndf']}) {a['img_s']:.0f} img/s, "
                f"{a['flops_per_img'] / 1e9:.2f} GFLOP/img{versus}")

    rows.append(("family", f"fp32 eager, batch {t['batch_size']}: " + "; ".join(one(arch) for arch in f)))
    if "shards" in r:
        sh = r["shards"]
        rows.append(("shards", f"train from shards: {sh['img_s']:.0f} img/s ({sh['workers']} workers) vs step on a "
                               f"fixed batch {sh['fixed_batch_img_s']:.0f}: {sh['ratio']:.2f}x"))
    if "load" in r:
        ld = r["load"]
        rows.append(("load", f"{ld['batches_s']:.1f} batches/s delivered vs {ld['trainer_batches_s']:.1f} consumed: "
                             f"{ld['ratio']:.1f}x"))
    size = r["shard"].get("image_size", 64)
    rows.append(("shard", f"{r['shard']['img_s']:.0f} img/s (500x375 JPEG -> bbox crop -> {size}x{size} PNG)"))
    if "embed" in r:
        e = r["embed"]
        rows.append(("embed", f"{e['captions_s']:.0f} captions/s vs plain encode {e['plain_captions_s']:.0f}: "
                              f"{e['ratio']:.1f}x ({e['distinct']} distinct of {e['captions']}), min cosine {e['min_cosine']:.4f}; "
                              f"plain encode in {e['precision']} vs fp32: "
                              f"{e['plain_captions_s'] / e['fp32_plain_captions_s']:.2f}x the captions/s"))
    if "memory" in r:
        rows.append(("memory", f"peak RSS of a one-epoch training run: {r['memory']['peak_rss_mib']:.0f} MiB"))
    return "\n".join(f"{name:<7} {text}" for name, text in rows)
