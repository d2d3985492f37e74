"""``hf``: a captioned image dataset read with Hugging Face ``datasets`` (imported only here).

``hf.name`` is a folder written by ``Dataset(Dict).save_to_disk`` (one ``Dataset`` is the split
``hf.train_split``) or a hub id, loaded with ``load_dataset`` (streamed by default). Images keep
their original encoded bytes where they are PNG or JPEG (``Image(decode=False)``); any other
picture is stored as PNG. Captions come from ``hf.caption_column`` (a string or a list of strings
per row), optional classes from ``hf.class_column``: a ``ClassLabel`` (its ids and names), an
integer (the id itself), or a string (the index in the sorted names, found in a first pass over
that column). Keys run over the train split's rows, then the test split's. The split is the
dataset's own (``hf.test_split``) or, with ``hf.test_split: null``, a seeded split of the train
split's rows (class-disjoint with a class column).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm import tqdm

from t2i import T2IError
from t2i.data.raw import FORMATS, RawWriter, Sample
from t2i.data.sources.common import CaptionCheck, caption_cell, captions_per_image, seeded_split
from t2i.params import HFParams, Params


def import_datasets():
    try:
        import datasets
    except ImportError:
        raise T2IError("dataset hf needs the `datasets` package: pip install 'datasets>=2.19'") from None
    return datasets


def load(datasets, cfg: HFParams) -> dict:
    """``{split name: Dataset | IterableDataset}`` of a saved folder or a hub id."""
    path = Path(cfg.name)
    saved = path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())
    try:
        if saved:
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(cfg.name, cfg.config, revision=cfg.revision, streaming=cfg.streaming)
    except Exception as e:  # load errors come in many types (network, hub, file system, format)
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise T2IError(f"hf.name: cannot load dataset {cfg.name!r}: {why}") from None
    return {cfg.train_split: ds} if isinstance(ds, (datasets.Dataset, datasets.IterableDataset)) else dict(ds)


def column(ds, name: str) -> list:
    """One column of a split, read on its own (a first pass when the split is streamed)."""
    return [row[name] for row in ds.select_columns([name])]


def labeler(datasets, feature, values: Callable[[], list], name: str) -> Callable[[object, str], tuple[int, str]]:
    """``(label, row) -> (class_id, class_name)`` for a class column of type ``feature``."""
    if isinstance(feature, datasets.ClassLabel):
        names = dict(enumerate(feature.names))
        lookup = lambda v: (v, names[v])  # noqa: E731
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        lookup = lambda v: (int(v), str(v))  # noqa: E731
    elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        ids = {n: i for i, n in enumerate(sorted({v for v in values() if v is not None}))}
        lookup = lambda v: (ids[v], v)  # noqa: E731
    else:
        raise T2IError(f"hf.class_column: {name!r} is {feature}, expected a ClassLabel, an integer or a string")

    def label(value: object, row: str) -> tuple[int, str]:
        try:
            return lookup(value)
        except (KeyError, TypeError):
            raise T2IError(f"hf: row {row} has no class in {name!r} (got {value!r})") from None
    return label


def image_of(value: object, row: str) -> bytes | Image.Image:
    """Original PNG/JPEG bytes of an image cell; any other picture decoded (stored as PNG)."""
    if isinstance(value, dict):  # Image(decode=False): {"bytes", "path"}
        if value.get("bytes") is None and value.get("path"):
            import fsspec  # a dependency of datasets; reads local paths and hub URLs alike

            try:
                with fsspec.open(value["path"], "rb") as f:
                    value = f.read()
            except OSError as e:
                raise T2IError(f"hf: row {row}: cannot read image {value['path']}: {e}") from None
        else:
            value = value.get("bytes")
    if isinstance(value, Image.Image):
        return value
    if not isinstance(value, bytes):
        raise T2IError(f"hf: row {row}: the image column holds {type(value).__name__}, not an image")
    try:
        with Image.open(io.BytesIO(value)) as im:
            return value if im.format in FORMATS else im.convert("RGB")
    except (OSError, SyntaxError) as e:
        raise T2IError(f"hf: row {row}: cannot read image: {e}") from None


def open_splits(datasets, cfg: HFParams) -> dict:
    """``{split: dataset}`` of the train (and test) split, columns checked, images left encoded."""
    loaded = load(datasets, cfg)
    if cfg.test_split == cfg.train_split:
        raise T2IError(f"hf.test_split: {cfg.test_split!r} is also hf.train_split")
    parts = {}
    for key, split in (("hf.train_split", cfg.train_split), ("hf.test_split", cfg.test_split)):
        if split is None:
            continue
        if split not in loaded:
            raise T2IError(f"{key}: no split {split!r} in {cfg.name} (available: {', '.join(loaded)})")
        ds = loaded[split]
        have = list(ds.features or [])
        for col_key, col in (("hf.image_column", cfg.image_column), ("hf.caption_column", cfg.caption_column),
                             ("hf.class_column", cfg.class_column)):
            if col is not None and col not in have:
                raise T2IError(f"{col_key}: no column {col!r} in {cfg.name} split {split} "
                               f"(available: {', '.join(have) or 'unknown, try hf.streaming: false'})")
        if isinstance(ds.features[cfg.image_column], datasets.Image):
            ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
        parts[split] = ds
    return parts


def seeded(datasets, train, label, cfg: HFParams, dl) -> dict[str, str]:
    """``{key: split}`` of the train split's rows, held out here (class-disjoint with classes)."""
    if label:
        ids = [label(v, f"{cfg.train_split}/{i}")[0] for i, v in enumerate(column(train, cfg.class_column))]
        n = len(ids)
    else:
        ids = None
        n = len(train) if isinstance(train, datasets.Dataset) else len(column(train, cfg.caption_column))
    return seeded_split([f"img_{i:06d}" for i in range(n)], ids, dl.test_fraction, dl.seed)


def prepare_hf(folder: Path, params: Params, progress: bool = True) -> dict:
    datasets, cfg, dl = import_datasets(), params.hf, params.download
    parts = open_splits(datasets, cfg)
    train = parts[cfg.train_split]
    label = None
    if cfg.class_column:
        label = labeler(datasets, train.features[cfg.class_column],
                        lambda: [v for ds in parts.values() for v in column(ds, cfg.class_column)], cfg.class_column)
    held = None  # {key: split} when the train split is split here
    how = f"hub splits {cfg.train_split}/{cfg.test_split}"
    if not cfg.test_split:
        held = seeded(datasets, train, label, cfg, dl)
        how = f"seeded {'class-disjoint' if label else 'by image'}, test_fraction={dl.test_fraction:g}, seed={dl.seed}"

    check = CaptionCheck(captions_per_image(params, default=1))
    counts, classes = {"train": 0, "test": 0}, {"train": set(), "test": set()}
    total = sum(map(len, parts.values())) if all(isinstance(ds, datasets.Dataset) for ds in parts.values()) else None
    seen = 0
    with RawWriter(folder) as out, tqdm(total=total, desc="hf", unit="img", disable=not progress) as bar:
        for split, ds in parts.items():
            for i, row in enumerate(ds):
                name, key, image_id = f"{split}/{i}", f"img_{seen:06d}", seen
                seen += 1
                bar.update()
                cell = row[cfg.caption_column]
                captions = check.take(name, caption_cell(cell, cfg.caption_column, f"hf: row {name}"))
                if captions is None:
                    continue
                part = held[key] if held else "train" if split == cfg.train_split else "test"
                meta = {"image_id": image_id, "file": name}
                if label:
                    meta["class_id"], meta["class_name"] = label(row[cfg.class_column], name)
                    classes[part].add(meta["class_id"])
                out.add(Sample(key, image_of(row[cfg.image_column], name), captions, part, meta))
                counts[part] += 1
    return {
        "dataset": "hf",
        "source": cfg.name,
        "counts": counts,
        "classes": {s: len(c) for s, c in classes.items()} if label else None,
        "captions_per_image": check.need,
        "split": how,
        "captions": check.report(seen, dl.max_missing),
    }
