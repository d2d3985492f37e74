"""``t2i shard``: raw images + captions -> WebDataset tars in data/shards/<dataset>."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.paths import Artifacts
from t2i.data.raw import read_raw
from t2i.data.shards import write_shards


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Write train/test shards and their manifest (byte-identical on rerun)."""
    p = params(params_file, overrides)
    cfg = p.shard
    at = Artifacts(data, p.dataset)
    out = at.shards
    with Timer() as t, tqdm(desc="shard", unit="img") as bar:
        m = write_shards(
            read_raw(at.raw), out, dataset=p.dataset, image_size=cfg.image_size,
            image_format=cfg.image_format, jpeg_quality=cfg.jpeg_quality,
            samples_per_shard=cfg.samples_per_shard, crop=cfg.crop, progress=bar.update,
        )
    n = sum(len(s["shards"]) for s in m["splits"].values())
    counts = " + ".join(f"{s['count']} {name}" for name, s in m["splits"].items())
    done("shard", t.seconds, f"{counts} samples in {n} shards -> {out}")
