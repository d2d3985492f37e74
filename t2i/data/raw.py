"""The raw layout every dataset is brought into before sharding.

``<raw>/images/<key>.png`` plus ``<raw>/samples.jsonl`` (one JSON line per sample, in a fixed
order: key, split, captions, meta). The shard stage reads only this layout, so a new dataset
needs only a writer of it.
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


@dataclass
class Sample:
    key: str  # unique, no dots (WebDataset splits file names at the first dot)
    image: Image.Image
    captions: list[str]
    split: str  # "train" or "test"
    meta: dict = field(default_factory=dict)  # image_id, class_id, class_name, attributes, ...


def check_sample(s: Sample) -> None:
    if not s.key or "." in s.key or "/" in s.key:
        raise T2IError(f"bad sample key {s.key!r}: must be non-empty, without dots or slashes")
    if s.split not in SPLITS:
        raise T2IError(f"sample {s.key}: unknown split {s.split!r} (expected train or test)")
    if not s.captions:
        raise T2IError(f"sample {s.key}: no captions")
    for i, c in enumerate(s.captions):
        if not c or not c.strip():
            raise T2IError(f"sample {s.key}: caption {i} is empty")


class RawWriter:
    """Append samples to a raw folder (``folder`` should be a temporary one, see io.atomic_dir)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        self._index = open(self.folder / "samples.jsonl", "w", encoding="utf-8")
        self.count = 0

    def add(self, s: Sample) -> None:
        check_sample(s)
        buf = io.BytesIO()
        s.image.save(buf, format="PNG")
        (self.folder / "images" / f"{s.key}.png").write_bytes(buf.getvalue())
        row = {"key": s.key, "split": s.split, "captions": s.captions, "meta": s.meta}
        self._index.write(json.dumps(row, sort_keys=True) + "\n")
        self.count += 1

    def close(self) -> None:
        self._index.close()

    def __enter__(self) -> "RawWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_raw(folder: Path) -> Iterator[Sample]:
    """Stream the samples of a raw folder in its stored order (memory stays flat)."""
    folder = Path(folder)
    index = folder / "samples.jsonl"
    if not index.is_file():
        raise T2IError(f"missing {index}: run the synth/download stage first")
    with open(index, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                key = row["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise T2IError(f"{index}: line {n} is not a valid sample record") from None
            path = folder / "images" / f"{key}.png"
            try:
                with Image.open(path) as im:
                    image = im.convert("RGB")
            except (OSError, SyntaxError) as e:
                raise T2IError(f"cannot read image {path}: {e}") from None
            s = Sample(key, image, row.get("captions", []), row.get("split", ""), row.get("meta", {}))
            check_sample(s)
            yield s
