"""WebDataset shards: ``<dir>/{train,test}-%06d.tar`` plus ``manifest.json`` (written last).

Per sample: ``<key>.png`` (or ``.jpg``), ``<key>.txt`` (one caption per line) and ``<key>.json``
(image id, class id and name, split, attributes). Tar members carry a fixed mtime, owner and
mode, and images are encoded deterministically, so a rerun gives byte-identical shards and
stable DVC hashes. Writing streams: one sample in memory at a time.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

import webdataset as wds
from PIL import Image

from t2i import T2IError
from t2i.data.raw import SPLITS, Sample, check_sample, one_line
from t2i.io import atomic_dir, dump_json, read_json

TAR_MTIME = 946684800  # 2000-01-01: any fixed value makes tars reproducible
MANIFEST = "manifest.json"


def square(image: Image.Image, size: int, bbox: list[float] | None = None) -> Image.Image:
    """A ``size`` x ``size`` picture: centre-cropped to a square, or, given a bounding box
    ``[x, y, w, h]``, cropped to a square of side 1.5x the box's longer side centred on the
    box and clipped to the image, then resized with antialiasing (StackGAN's CUB crop: a crop
    clipped at the border is stretched, not cut)."""
    w, h = image.size
    if bbox is not None:
        x, y, bw, bh = bbox
        r, cx, cy = 0.75 * max(bw, bh), x + bw / 2, y + bh / 2
        box = (max(0, round(cx - r)), max(0, round(cy - r)), min(w, round(cx + r)), min(h, round(cy + r)))
        if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
            image = image.crop(box)
    elif w != h:
        m = min(w, h)
        image = image.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m))
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    return image


def encode_image(image: Image.Image, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    elif fmt == "jpg":
        image.save(buf, format="JPEG", quality=quality)
    else:
        raise T2IError(f"unknown image format {fmt!r} (expected png or jpg)")
    return buf.getvalue()


def to_record(s: Sample, image_size: int, fmt: str, quality: int, crop: str = "bbox") -> dict:
    check_sample(s)
    bbox = s.meta.get("bbox") if crop == "bbox" else None
    captions = [one_line(c) for c in s.captions]
    meta = {**s.meta, "key": s.key, "split": s.split}
    return {
        "__key__": s.key,
        fmt: encode_image(square(s.image.convert("RGB"), image_size, bbox), fmt, quality),
        "txt": ("\n".join(captions) + "\n").encode(),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }


def write_shards(
    samples: Iterable[Sample],
    out: Path,
    *,
    dataset: str,
    image_size: int = 64,
    image_format: str = "png",
    jpeg_quality: int = 95,
    samples_per_shard: int = 1000,
    crop: str = "bbox",
    progress=None,
) -> dict:
    """Shard ``samples`` into the folder ``out`` (replaced atomically); return the manifest.

    ``crop="bbox"`` crops around ``meta["bbox"]`` where a sample has one (CUB); ``"none"`` keeps
    the whole picture (centre square)."""
    if crop not in ("bbox", "none"):
        raise T2IError(f"unknown crop {crop!r} (expected bbox or none)")
    out = Path(out)
    with atomic_dir(out) as tmp:
        writers: dict[str, wds.ShardWriter] = {}
        shards: dict[str, list[dict]] = {split: [] for split in SPLITS}
        n_captions: set[int] = set()

        def opened(split: str) -> wds.ShardWriter:
            if split not in writers:
                def post(fname: str, split=split) -> None:
                    shards[split].append({"name": Path(fname).name, "count": writers[split].count})

                writers[split] = wds.ShardWriter(
                    str(tmp / f"{split}-%06d.tar"), maxcount=samples_per_shard, maxsize=1e12,
                    post=post, verbose=0, encoder=False, mtime=TAR_MTIME,
                    user="t2i", group="t2i", mode=0o444,
                )
            return writers[split]

        try:
            for s in samples:
                opened(s.split).write(to_record(s, image_size, image_format, jpeg_quality, crop))
                n_captions.add(len(s.captions))
                if progress:
                    progress()
        finally:
            for w in writers.values():
                w.close()
        if not writers:
            raise T2IError("no samples to shard: the raw dataset is empty")
        manifest = {
            "dataset": dataset,
            "image_size": image_size,
            "image_format": image_format,
            "captions_per_sample": sorted(n_captions)[0] if len(n_captions) == 1 else sorted(n_captions),
            "splits": {
                split: {"count": sum(x["count"] for x in shards[split]), "shards": shards[split]}
                for split in SPLITS if shards[split]
            },
        }
        (tmp / MANIFEST).write_bytes(dump_json(manifest))  # last: its presence marks a complete set
    return manifest


def read_manifest(folder: Path) -> dict:
    manifest = read_json(Path(folder) / MANIFEST)
    if not isinstance(manifest, dict) or "splits" not in manifest:
        raise T2IError(f"{Path(folder) / MANIFEST} is not a shard manifest")
    return manifest


def shard_paths(folder: Path, split: str, manifest: dict | None = None, verify: bool = False) -> list[Path]:
    """The shard files of ``split`` listed in the manifest; each must exist. ``verify``: also
    read each tar's headers and check its sample count against the manifest (a tar cut at a
    block boundary reads as a shorter valid tar, so nothing else would notice)."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    if split not in manifest["splits"]:
        raise T2IError(f"{folder}: no {split!r} split (have: {', '.join(manifest['splits'])})")
    listed = manifest["splits"][split]["shards"]
    paths = [folder / x["name"] for x in listed]
    for p, x in zip(paths, listed):
        if not p.is_file():
            raise T2IError(f"missing shard {p} (listed in {folder / MANIFEST})")
        if verify:
            try:
                with tarfile.open(p) as tar:
                    n = len({m.name.split(".", 1)[0] for m in tar})
            except READ_ERRORS as e:
                raise shard_error(str(p), e) from None
            if n != x["count"]:
                raise T2IError(f"corrupt or truncated shard {p}: {n} samples, manifest says {x['count']}")
    return paths


READ_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)  # what a bad tar raises while read


def shard_error(shard: str, e: BaseException) -> T2IError:
    """One line for a shard that cannot be read: its path or URL and the reader's first words
    (also when a DataLoader worker wrapped the error in its traceback)."""
    lines = str(e.args[0] if e.args and isinstance(e.args[0], str) else e).strip().splitlines() or [type(e).__name__]
    why = lines[-1].split(": ", 1)[-1] if lines[0].startswith("Caught ") else lines[0]
    first = re.match(r"""\(['"](.*?)['"],""", why)  # a worker prints the args tuple: its first item
    return T2IError(f"corrupt or truncated shard {shard}: {(first[1] if first else why).split(' @ ')[0]}")


def iter_tar(path: Path, expected: int | None = None) -> Iterator[dict]:
    """Raw samples of one shard (``{"__key__", ext: bytes, ...}``); names the file if it is bad."""
    n = 0
    try:
        stream = wds.WebDataset(str(path), shardshuffle=False, handler=wds.reraise_exception, empty_check=False)
        for sample in stream:
            n += 1
            yield {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
    except READ_ERRORS as e:
        raise shard_error(str(path), e) from None
    if expected is not None and n != expected:
        raise T2IError(f"corrupt or truncated shard {path}: {n} samples, manifest says {expected}")
