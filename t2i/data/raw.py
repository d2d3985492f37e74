"""The raw layout every dataset is brought into before sharding.

``<raw>/images/<key>.<png|jpg>`` plus ``<raw>/samples.jsonl`` (one JSON line per sample, in a
fixed order: key, image file name, split, captions, meta) and ``<raw>/info.json`` (counts and
the hashes of the source files). The shard stage reads only this layout, so a new dataset needs
only a writer of it. Drawn images are stored as PNG; photos from a real dataset keep their
original encoded bytes (no re-encode), and the shard stage decodes, crops and resizes them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

from t2i import T2IError

SPLITS = ("train", "test")
FORMATS = {"PNG": "png", "JPEG": "jpg"}  # PIL format -> file extension kept in the raw layout


@dataclass
class Sample:
    key: str  # unique, no dots (WebDataset splits file names at the first dot)
    image: Image.Image | bytes  # a decoded picture, or an encoded PNG/JPEG file kept byte for byte
    captions: list[str]
    split: str  # "train" or "test"
    meta: dict = field(default_factory=dict)  # image_id, class_id, class_name, attributes, bbox, ...


def one_line(text: str) -> str:
    """``text`` with each run of whitespace (newlines included) made one space, none at the ends."""
    return " ".join(text.split())


def check_captions(captions: list[str], where: str) -> None:
    """The one caption check (raw samples, shards, the text encoder, ``t2i generate``): at least
    one caption, none empty; ``where`` says whose captions they are."""
    if not captions:
        raise T2IError(f"{where}: no captions")
    for i, c in enumerate(captions):
        if not isinstance(c, str) or not c.strip():
            raise T2IError(f"{where}: caption {i} is empty ({c!r}): captions must describe the image")


def check_sample(s: Sample) -> None:
    """Key, split and captions of a sample: every stage that takes samples in calls it."""
    if not s.key or "." in s.key or "/" in s.key:
        raise T2IError(f"bad sample key {s.key!r}: must be non-empty, without dots or slashes")
    if s.split not in SPLITS:
        raise T2IError(f"sample {s.key}: unknown split {s.split!r} (expected train or test)")
    check_captions(s.captions, f"sample {s.key}")


def image_extension(data: bytes, name: str) -> str:
    """``png`` or ``jpg`` for encoded image bytes; a clear error for anything else."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except (OSError, SyntaxError) as e:
        raise T2IError(f"cannot read image {name}: {e}") from None
    if fmt not in FORMATS:
        raise T2IError(f"image {name} is {fmt}, expected PNG or JPEG")
    return FORMATS[fmt]


class RawWriter:
    """Append samples to a raw folder (``folder`` should be a temporary one, see io.atomic_dir)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        self._index = open(self.folder / "samples.jsonl", "w", encoding="utf-8")
        self.count = 0

    def add(self, s: Sample) -> None:
        check_sample(s)
        if isinstance(s.image, bytes):
            data, ext = s.image, image_extension(s.image, s.key)
        else:
            buf = io.BytesIO()
            s.image.save(buf, format="PNG")
            data, ext = buf.getvalue(), "png"
        (self.folder / "images" / f"{s.key}.{ext}").write_bytes(data)
        row = {"key": s.key, "image": f"{s.key}.{ext}", "split": s.split, "captions": s.captions, "meta": s.meta}
        self._index.write(json.dumps(row, sort_keys=True) + "\n")
        self.count += 1

    def close(self) -> None:
        self._index.close()

    def __enter__(self) -> "RawWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_raw(folder: Path) -> Iterator[Sample]:
    """Stream the samples of a raw folder in its stored order, images decoded to RGB."""
    folder = Path(folder)
    index = folder / "samples.jsonl"
    if not index.is_file():
        raise T2IError(f"missing {index}: run the download stage first")
    with open(index, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                key, name = row["key"], row["image"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise T2IError(f"{index}: line {n} is not a valid sample record") from None
            path = folder / "images" / name
            try:
                with Image.open(path) as im:
                    image = im.convert("RGB")
            except (OSError, SyntaxError) as e:
                raise T2IError(f"cannot read image {path}: {e}") from None
            s = Sample(key, image, row.get("captions", []), row.get("split", ""), row.get("meta", {}))
            check_sample(s)
            yield s
