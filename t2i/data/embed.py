"""Embedded shards: each image shard again, plus ``<key>.emb.npy`` (float16, (captions, dim)).

The training loader then reads images, captions and embeddings in one WebDataset stream, local
or remote. Shards are processed one at a time (memory is bounded by the shard size and the
caption cache, not by the dataset size); identical captions are encoded once, within a shard
and across shards through a bounded cache. Captions are encoded in sorted order with a fixed
batch size, so CPU results are deterministic. Where the samples say which attributes each
caption names (synthetic flowers), ``probes.pt`` beside the shards holds the attribute probes'
captions and embeddings (``t2i.probes``), encoded through the same cache.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import webdataset as wds

from t2i import T2IError
from t2i.data.loader import image_tensor, parse_captions
from t2i.data.raw import check_captions
from t2i.data.shards import MANIFEST, TAR_MTIME, iter_tar, read_manifest, shard_paths
from t2i.io import atomic_dir, dump_json
from t2i import probes

Encode = Callable[[list[str]], np.ndarray]


class CaptionCache:
    """caption -> float16 embedding, keeping at most ``size`` entries (oldest dropped first)."""

    def __init__(self, encode: Encode, size: int = 100_000):
        self.encode, self.size = encode, size
        self.table: OrderedDict[str, np.ndarray] = OrderedDict()
        self.encoded = 0  # captions sent to the model

    def lookup(self, captions: list[str]) -> np.ndarray:
        new = sorted(set(captions) - self.table.keys())
        fresh = dict(zip(new, self.encode(new).astype(np.float16))) if new else {}
        self.encoded += len(new)
        out = np.stack([fresh[c] if c in fresh else self.table[c] for c in captions])
        self.table.update(fresh)
        while len(self.table) > self.size:
            self.table.popitem(last=False)
        return out


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def read_captions(sample: dict, where: str) -> list[str]:
    if "txt" not in sample:
        raise T2IError(f"{where}: sample {sample['__key__']} has no .txt captions")
    lines = parse_captions(sample["txt"])
    check_captions(lines, f"{where}: sample {sample['__key__']}")
    return lines


def embed_shards(shards: Path, out: Path, encode: Encode, *, model: str, dim: int, precision: str | None = None,
                 cache_size: int = 100_000, progress=None) -> dict:
    """Write embedded copies of every shard listed in ``shards/manifest.json`` to ``out``
    (``precision``: the text model's arithmetic, recorded in the manifest when given)."""
    shards, out = Path(shards), Path(out)
    manifest = read_manifest(shards)
    jobs = []
    for split, info in manifest["splits"].items():
        counts = [x["count"] for x in info["shards"]]
        jobs += list(zip(shard_paths(shards, split, manifest), counts))  # all exist, checked up front
    cache = CaptionCache(encode, cache_size)
    total = 0
    test, train_metas = [], []  # what the attribute probes are built from
    with atomic_dir(out) as tmp:
        for path, count in jobs:
            samples = list(iter_tar(path, expected=count))  # one shard in memory
            caps = [read_captions(s, str(path)) for s in samples]
            for s in samples:  # what training will decode must decode
                image_tensor(s.get("png") or s.get("jpg") or b"", f"shard {path}: sample {s['__key__']}")
            flat = cache.lookup([c for cs in caps for c in cs])
            with wds.TarWriter(str(tmp / path.name), encoder=False, mtime=TAR_MTIME,
                               user="t2i", group="t2i", mode=0o444) as sink:
                start = 0
                for sample, cs in zip(samples, caps):
                    emb = flat[start:start + len(cs)]
                    start += len(cs)
                    sink.write({**sample, "emb.npy": npy_bytes(emb)})
                    meta = json.loads(sample.get("json", b"{}"))
                    if meta.get("split") == "test":
                        test.append((sample["__key__"], cs, meta))
                    else:
                        train_metas.append(meta)
            total += len(samples)
            if progress:
                progress(len(samples))
        spec = probes.probe_captions(test, train_metas)
        if spec is not None:  # the source says which attributes each caption names
            probes.save_probes(probes.with_embeddings(spec, cache.lookup), tmp)
        summary = {
            **manifest,
            "text_model": model,
            "emb_dim": dim,
            "emb_dtype": "float16",
            **({"text_precision": precision} if precision else {}),
            "unique_captions_encoded": cache.encoded,
            **({"probes": probes.FILE} if spec is not None else {}),
        }
        (tmp / MANIFEST).write_bytes(dump_json(summary))
    return summary
