"""Evaluate a generator on the test split: metrics.json plus a sample grid and a GAN-INT strip.

One image is generated per test image, from one of its captions (picked with the seed) and
seeded noise, so a rerun with the same seed gives the same images and the same numbers. The
metric registry (``t2i.metrics``) is checked before any work is done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from t2i import T2IError
from t2i.data.loader import batches, to_float
from t2i.evaluator import Evaluator
from t2i.generate import fake_images
from t2i.grid import INTERP_STEPS, add_header, gan_int_strip, make_grid, save_image
from t2i.io import write_json_atomic
from t2i.metrics import EvalContext, MetricSkipped, class_keys, get
from t2i.params import EvaluateParams


# --------------------------------------------------------------------------- evaluation


def read_split(urls: list[str], batch_size: int, max_images: int | None) -> dict:
    """The test split in order: images uint8 (N, 3, S, S), emb (N, C, D), captions, meta."""
    images, embs, captions, meta = [], [], [], []
    n = 0
    for b in batches(urls, batch_size, drop_last=False):
        take = len(b["meta"]) if max_images is None else min(len(b["meta"]), max_images - n)
        images.append(b["image"][:take])
        embs.append(b["emb"][:take])
        captions += b["captions"][:take]
        meta += b["meta"][:take]
        n += take
        if max_images is not None and n >= max_images:
            break
    if n < 2:
        raise T2IError(f"evaluation needs at least 2 test images, got {n} from {len(urls)} shard(s)")
    return {"image": torch.cat(images), "emb": torch.cat(embs), "captions": captions, "meta": meta}


def pick_distinct(meta: list[dict], k: int, gen: torch.Generator) -> list[int]:
    """``k`` image indices in a seeded order, preferring images of classes not picked yet."""
    order = torch.randperm(len(meta), generator=gen).tolist()
    keys = class_keys(meta)
    seen, first, rest = set(), [], []
    for i in order:
        key = keys[i]
        (rest if key in seen else first).append(i)
        seen.add(key)
    return (first + rest)[:k]


def _check_compatible(generator: torch.nn.Module, evaluator: Evaluator, data: dict) -> None:
    size, dim = data["image"].shape[-1], data["emb"].shape[-1]
    cfg = generator.cfg
    if cfg.image_size != size:
        raise T2IError(f"generator makes {cfg.image_size}x{cfg.image_size} images but the test split is {size}x{size}")
    if evaluator.image_size != size:
        raise T2IError(f"evaluator expects {evaluator.image_size}x{evaluator.image_size} images "
                       f"but the test split is {size}x{size}")
    if cfg.emb_dim != dim:
        raise T2IError(f"generator expects emb_dim {cfg.emb_dim} but the test embeddings have {dim}")
    if evaluator.emb_dim != dim:
        raise T2IError(f"evaluator expects emb_dim {evaluator.emb_dim} but the test embeddings have {dim}")


@torch.no_grad()
def evaluate(generator: torch.nn.Module, evaluator: Evaluator, test_urls: list[str], out_dir: str | os.PathLike,
             cfg: EvaluateParams = EvaluateParams(), *, device: str = "cpu",
             encode: Callable[[list[str]], object] | None = None, probes: dict | None = None,
             discriminator: torch.nn.Module | None = None, strip: bool = True) -> dict:
    """Score ``generator`` on the test split; write metrics.json, grid.png, interpolation.png.
    ``cfg``'s defaults and ranges live in t2i/params.py (``device`` is the resolved one);
    ``encode`` is the generator's text encoder, for metrics that write captions of their own;
    ``probes`` the attribute probes beside the embeddings (``t2i.probes``) and ``discriminator``
    the run's D, for the metrics of what G draws and what D checks. ``strip``: the GAN-INT
    interpolation.png (not for an oracle generator, which knows no caption between two)."""
    metrics, seed, batch_size, max_images = cfg.metrics, cfg.seed, cfg.batch_size, cfg.max_images
    grid_captions, grid_noise = cfg.grid_captions, cfg.grid_noise
    fns = get(list(metrics))
    out_dir = Path(out_dir)
    data = read_split(test_urls, batch_size, max_images)
    _check_compatible(generator, evaluator, data)
    N, C, _ = data["emb"].shape

    was_training = generator.training
    generator.eval()
    evaluator.eval()
    try:
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randint(0, C, (N,), generator=gen)  # one caption per test image
        emb = data["emb"][torch.arange(N), pick]  # (N, D)
        z = torch.randn(N, generator.cfg.z_dim, generator=gen)  # (N, z_dim)
        fake = fake_images(generator, z, emb, device, batch_size)  # (N, 3, S, S)

        ctx = EvalContext(evaluator=evaluator, real=to_float(data["image"]), fake=fake, emb=emb,
                          all_emb=data["emb"], pick=pick, meta=data["meta"], seed=seed, device=device,
                          batch_size=batch_size, inception_weights=cfg.inception_weights, online=cfg.online,
                          generate=lambda z, e: fake_images(generator, z, e, device, batch_size),
                          z_dim=generator.cfg.z_dim, encode=encode, probes=probes, discriminator=discriminator)
        results: dict = {"n_images": N, "n_captions_per_image": C, "seed": seed}
        skipped: dict[str, str] = {}
        for name, fn in zip(metrics, fns):
            try:
                results.update(fn(ctx))
            except MetricSkipped as e:
                skipped[name] = str(e)
        results["skipped"] = skipped

        # Grid: rows = test captions (distinct classes first), columns = shared noise vectors.
        rows = pick_distinct(data["meta"], grid_captions, gen)
        z_cols = torch.randn(grid_noise, generator.cfg.z_dim, generator=gen)  # (grid_noise, z_dim)
        grid_z = z_cols.repeat(len(rows), 1)  # (rows * grid_noise, z_dim)
        grid_emb = emb[rows].repeat_interleave(grid_noise, dim=0)  # (rows * grid_noise, D)
        labels = [data["captions"][i][pick[i]] for i in rows]
        grid = make_grid(fake_images(generator, grid_z, grid_emb, device, batch_size), grid_noise, labels)

        # GAN-INT: one noise vector, caption embeddings interpolated between two classes.
        if strip:
            a, b = pick_distinct(data["meta"], 2, gen)
            interp_z, interp_emb = gan_int_strip(emb[a], emb[b], torch.randn(1, generator.cfg.z_dim, generator=gen))
            strip = make_grid(fake_images(generator, interp_z, interp_emb, device, batch_size), INTERP_STEPS)
            strip = add_header(strip, [f"left: {data['captions'][a][pick[a]]}",
                                        f"right: {data['captions'][b][pick[b]]}"])
    finally:
        generator.train(was_training)

    save_image(grid, out_dir / "grid.png")
    if strip:
        save_image(strip, out_dir / "interpolation.png")
    write_json_atomic(out_dir / "metrics.json", results)
    return results
