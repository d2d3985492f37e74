"""``t2i embed``: one sentence embedding per caption, stored beside the images in data/embeddings/<dataset>."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.paths import Artifacts
from t2i.data.embed import embed_shards
from t2i.data.shards import read_manifest


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Encode every caption (each distinct caption once) into float16 embedded shards."""
    p = params(params_file, overrides)
    cfg = p.embed
    at = Artifacts(data, p.dataset)
    src, out = at.shards, at.embeddings
    total = sum(s["count"] for s in read_manifest(src)["splits"].values())  # fails early if missing
    from t2i.text import TextEncoder

    encoder = TextEncoder(cfg.model, cfg.device, cfg.batch_size, cfg.precision)
    with Timer() as t, tqdm(total=total, desc="embed", unit="img") as bar:
        m = embed_shards(src, out, encoder.encode, model=cfg.model, dim=encoder.dim, precision=cfg.precision,
                         cache_size=cfg.cache_size, progress=bar.update)
    done("embed", t.seconds, f"{m['unique_captions_encoded']} distinct captions, {m['emb_dim']}-d -> {out}")
