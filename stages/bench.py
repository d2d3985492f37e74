"""``t2i bench``: speed figures of this machine, ratios measured in one run -> data/bench/results.json."""

from __future__ import annotations

from pathlib import Path

import typer

from stages.common import DataDir, Overrides, ParamsFile, params
from t2i.paths import Artifacts


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Train step, loader, shard and embed throughput, and peak memory, for the current params."""
    p = params(params_file, overrides)
    from t2i import bench
    from t2i.data.loader import batches, embedded_urls
    from t2i.io import write_json_atomic
    from t2i.device import pick_device

    at = Artifacts(data, p.dataset)
    src = at.embeddings
    urls = embedded_urls(src, "train") if (src / "manifest.json").is_file() else None
    emb_dim, size, captions = 384, p.shard.image_size, None
    if urls:  # the real shapes and captions of the embedded dataset (first 2000 images)
        first = [b for _, b in zip(range(8), batches(urls, 256, drop_last=False))]
        emb_dim, size = first[0]["emb"].shape[-1], first[0]["image"].shape[-1]
        captions = [c for b in first for cs in b["captions"] for c in cs]
    results = bench.run(p.train, urls=urls, emb_dim=emb_dim, image_size=size, captions=captions,
                        device=pick_device(p.train.device), ground=p.ground, embed_precision=p.embed.precision)
    write_json_atomic(at.bench, results)
    typer.echo(bench.table(results))
    typer.echo(f"bench: -> {at.bench}")
