"""``folder``: a local folder of images in the Hugging Face ``imagefolder`` convention.

``folder.path`` holds ``.jpg``/``.jpeg``/``.png`` images at any depth (names starting with a dot
are skipped). An image's captions come from ``metadata.jsonl`` at the root (one JSON object per
line: ``file_name`` relative to the root, the caption column as a string or a list of strings,
optionally the class column), or, where its row has no caption column or it has no row, from a
``.txt`` beside it with the same stem (one caption per line). Images keep their original bytes.

A split the folder already has is kept: ``train/`` and ``test/`` folders at the root (each may
hold its own ``metadata.jsonl``, names relative to it), or a ``split`` column in the metadata
(``train`` or ``test`` on every row). Without one the split is seeded: class-disjoint with a
class column, else by image (``download.test_fraction``, ``download.seed``).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from t2i import T2IError
from t2i.data.raw import RawWriter, Sample, image_extension
from t2i.data.sources.common import CaptionCheck, caption_cell, captions_per_image, clean_lines, seeded_split
from t2i.params import Params

EXTENSIONS = (".jpg", ".jpeg", ".png")
METADATA = "metadata.jsonl"
SPLITS = ("train", "test")  # the split folder names, and the values of the split column
SPLIT_COLUMN = "split"


def read_metadata(root: Path, images: list[str], under: str = "") -> dict[str, dict]:
    """``{file_name: row}`` of ``<root>/<under>/metadata.jsonl`` (empty without one), names
    relative to ``root``; every row names an image."""
    path, known = root / under / METADATA, set(images)
    rows: dict[str, dict] = {}
    if not path.is_file():
        return rows
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise T2IError(f"{path}: line {n} is not JSON: {line[:60]!r}") from None
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise T2IError(f"{path}: line {n} has no file_name: {line[:60]!r}")
        name = (PurePosixPath(under) / row["file_name"]).as_posix()
        if name not in known:
            why = "is not a .jpg, .jpeg or .png image" if (root / name).is_file() else "does not exist"
            raise T2IError(f"{path}: line {n}: file_name {row['file_name']!r} {why}")
        if name in rows:
            raise T2IError(f"{path}: line {n}: file_name {name!r} is listed twice")
        rows[name] = row
    return rows


def check_column(rows: dict[str, dict], column: str, key: str, path: Path) -> None:
    """``column`` must appear in some row of the metadata (when there is any)."""
    if rows and not any(column in row for row in rows.values()):
        have = sorted({k for row in rows.values() for k in row} - {"file_name"})
        raise T2IError(f"{key}: no column {column!r} in {path} (available: {', '.join(have) or 'none'})")


def read_txt(path: Path) -> list[str]:
    """The captions of a ``.txt`` beside an image, one per line (none without the file)."""
    try:
        return clean_lines(path.read_text(encoding="utf-8")) if path.is_file() else []
    except UnicodeDecodeError:
        raise T2IError(f"{path}: not UTF-8 text") from None


def class_ids(labels: list[object], column: str, files: list[str]) -> tuple[list[int], list[str]]:
    """Class ids and names: the integer itself for int labels, the index in the sorted names for strings."""
    for label, file in zip(labels, files):
        if label is None:
            raise T2IError(f"{file}: no class column {column!r} in its {METADATA} row")
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise T2IError(f"{file}: class column {column!r} holds {label!r}, expected a string or an integer")
    if len({type(x) for x in labels}) > 1:
        raise T2IError(f"class column {column!r} mixes strings and integers")
    if labels and isinstance(labels[0], int):
        return list(labels), [str(x) for x in labels]
    index = {name: i for i, name in enumerate(sorted(set(labels)))}
    return [index[x] for x in labels], list(labels)


def given_split(root: Path, files: list[str], rows: dict[str, dict]) -> tuple[dict[str, str], str] | None:
    """The folder's own split, ``({file: "train" | "test"}, how)``, or None when it has none."""
    tops = {PurePosixPath(f).parts[0] if len(PurePosixPath(f).parts) > 1 else "" for f in files}
    if set(SPLITS) <= tops:  # train/ and test/ folders
        if outside := sorted(f for f in files if PurePosixPath(f).parts[0] not in SPLITS):
            raise T2IError(f"folder.path: {root} has train/ and test/ folders, but {outside[0]} is in neither")
        return {f: PurePosixPath(f).parts[0] for f in files}, "given: the train/ and test/ folders"
    values = {f: rows.get(f, {}).get(SPLIT_COLUMN) for f in files}
    if all(v is None for v in values.values()):
        return None
    for f, v in values.items():
        if v not in SPLITS:
            raise T2IError(f"{root / METADATA}: {f}: split column {SPLIT_COLUMN!r} is {v!r}, expected 'train' or 'test'")
    if set(values.values()) != set(SPLITS):
        raise T2IError(f"{root / METADATA}: split column {SPLIT_COLUMN!r} puts every image in "
                       f"{next(iter(values.values()))!r}: a test split needs images too")
    return values, f"given: the {SPLIT_COLUMN!r} column of {METADATA}"


def prepare_folder(folder: Path, params: Params, progress: bool = True) -> dict:
    cfg, dl = params.folder, params.download
    root = Path(cfg.path)
    if not root.is_dir():
        raise T2IError(f"folder.path: {cfg.path} is not a folder")
    images = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                    if p.suffix.lower() in EXTENSIONS and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not images:
        raise T2IError(f"folder.path: no .jpg, .jpeg or .png images under {cfg.path}")
    rows = read_metadata(root, images)
    for split in SPLITS:  # imagefolder's per-split metadata (train/metadata.jsonl, ...)
        for name, row in read_metadata(root, images, split).items():
            if name in rows:
                raise T2IError(f"{root / split / METADATA}: {name!r} is also listed in {root / METADATA}")
            rows[name] = row
    if not all((root / f).with_suffix(".txt").is_file() for f in rows):  # else captions come from .txt
        check_column(rows, cfg.caption_column, "folder.caption_column", root / METADATA)
    if cfg.class_column:
        if not rows:
            raise T2IError(f"folder.class_column: {cfg.class_column!r} needs a {METADATA} in {cfg.path}")
        check_column(rows, cfg.class_column, "folder.class_column", root / METADATA)

    check = CaptionCheck(captions_per_image(params, default=1))
    kept: list[tuple[int, str, list[str]]] = []  # (image index, file, captions)
    for i, file in enumerate(images):
        row = rows.get(file, {})
        if cfg.caption_column in row:
            captions = caption_cell(row[cfg.caption_column], cfg.caption_column, f"{root / METADATA}: {file}")
        else:
            captions = read_txt((root / file).with_suffix(".txt"))
        captions = check.take(file, captions)
        if captions is not None:
            kept.append((i, file, captions))
    captions_info = check.report(len(images), dl.max_missing)

    keys = [f"img_{i:06d}" for i, _, _ in kept]
    files = [file for _, file, _ in kept]
    ids = names = None
    if cfg.class_column:
        ids, names = class_ids([rows.get(f, {}).get(cfg.class_column) for f in files], cfg.class_column, files)
    given = given_split(root, files, rows)
    if given is not None:
        split, how = {key: given[0][file] for key, file in zip(keys, files)}, given[1]
    else:
        split = seeded_split(keys, ids, dl.test_fraction, dl.seed)
        how = (f"seeded {'class-disjoint' if ids is not None else 'by image'}, "
               f"test_fraction={dl.test_fraction:g}, seed={dl.seed}")
    with RawWriter(folder) as out, tqdm(total=len(kept), desc="folder", unit="img", disable=not progress) as bar:
        for n, (key, (i, file, captions)) in enumerate(zip(keys, kept)):
            data = (root / file).read_bytes()
            image_extension(data, str(root / file))  # names the source file if it is not a PNG/JPEG
            meta = {"image_id": i, "file": file}
            if ids is not None:
                meta.update(class_id=ids[n], class_name=names[n])
            out.add(Sample(key, data, captions, split[key], meta))
            bar.update()
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "test")}
    return {
        "dataset": "folder",
        "source": cfg.path,
        "counts": counts,
        "classes": None if ids is None else
        {s: len({c for k, c in zip(keys, ids) if split[k] == s}) for s in ("train", "test")},
        "captions_per_image": check.need,
        "split": how,
        "captions": captions_info,
    }
