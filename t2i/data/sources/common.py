"""What the dataset adapters share: fetching their files, checking captions, seeded splits."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

from tqdm import tqdm

from t2i import T2IError
from t2i.data.download import Fetched, RemoteFile, fetch
from t2i.data.raw import RawWriter, Sample, one_line
from t2i.params import Params

SHOW = 5  # names quoted in a report of missing captions


def fetch_all(files: list[RemoteFile], params: Params, progress: bool = True) -> dict[str, Fetched]:
    """Each file verified under ``download.root`` (fetched only when missing or bad)."""
    cfg = params.download
    return {f.name: fetch(f, Path(cfg.root), mirror=cfg.mirror, md5=cfg.md5, retries=cfg.retries,
                          timeout=cfg.timeout, backoff=cfg.backoff, progress=progress) for f in files}


def sources_info(fetched: dict[str, Fetched], files: list[RemoteFile]) -> dict:
    """What info.json records of each source file: size, md5, sha256 and whether its md5 is the
    official one (only then are the official sample counts asserted)."""
    official = {f.name: f.md5 for f in files}
    return {name: {"bytes": f.size, "md5": f.md5, "sha256": f.sha256, "official": f.md5 == official[name]}
            for name, f in sorted(fetched.items())}


def is_official(fetched: dict[str, Fetched], files: list[RemoteFile]) -> bool:
    """True when every file with a pinned official md5 matches it."""
    return all(fetched[f.name].md5 == f.md5 for f in files if f.md5)


def check_counts(counts: dict[str, int], expected: dict[str, int], official: bool, archive: str) -> None:
    """The published split sizes must hold when the image archives are the official ones."""
    if official and counts != expected:
        raise T2IError(f"official {archive} should give {expected['train']} train + {expected['test']} test "
                       f"images, got {counts['train']} + {counts['test']}")


def write_moving(folder: Path, rows: list[tuple[str, Path, list[str], str, dict]], desc: str,
                 progress: bool = True) -> dict[str, int]:
    """Write ``(key, image file, captions, split, meta)`` rows to the raw folder, each image's
    original bytes as they are; each unpacked file is deleted once written, so the images are on
    disk once. Returns the count per split."""
    counts = {"train": 0, "test": 0}
    with RawWriter(folder) as out:
        for key, path, captions, split, meta in tqdm(rows, desc=desc, unit="img", disable=not progress):
            if not path.is_file():
                raise T2IError(f"{meta.get('file', path.name)} is listed but not in the archive")
            out.add(Sample(key, path.read_bytes(), captions, split, meta))
            path.unlink()
            counts[split] += 1
    return counts


def finish_archive(folder: Path, work: Path, rows: list[tuple[str, Path, list[str], str, dict]], *,
                   dataset: str, params: Params, progress: bool, check: CaptionCheck, total: int, captions,
                   fetched: dict[str, Fetched], official_files: list[RemoteFile], captions_file: RemoteFile,
                   expected: dict[str, int], **extra) -> dict:
    """The closing steps of an adapter of image archives with Reed et al.'s captions (cub,
    oxford-102): fail on too many images without captions (``check``, of ``total``), write
    ``rows``, remove the unpacked ``work`` folder, assert the official split sizes when
    ``official_files`` (the image archive first) are the official ones, and return the
    info.json summary (``extra`` entries added to it)."""
    report = check.report(total, params.download.max_missing)
    counts = write_moving(folder, rows, dataset, progress)
    shutil.rmtree(work)
    official = is_official(fetched, official_files)
    check_counts(counts, expected, official, official_files[0].name)
    return {
        "dataset": dataset,
        "counts": counts,
        "classes": {"train": len(captions.train_classes), "test": len(captions.test_classes)},
        "captions_per_image": check.need,
        "captions": report,
        **extra,
        "official_counts_checked": official,
        "sources": sources_info(fetched, [*official_files, captions_file]),
    }


def captions_per_image(params: Params, default: int) -> int:
    return params.download.captions_per_image or default


def clean_lines(text: str) -> list[str]:
    """One caption per non-blank line, inner whitespace collapsed."""
    return [one_line(line) for line in text.splitlines() if line.strip()]


def caption_cell(cell: object, column: str, where: str) -> list[str]:
    """A caption column's value as captions: a string is one, a list of strings several, null none."""
    if cell is None:
        return []
    if isinstance(cell, str):
        cell = [cell]
    if not isinstance(cell, list) or not all(isinstance(c, str) for c in cell):
        raise T2IError(f"{where}: caption column {column!r} holds {str(cell)[:60]!r}, "
                       f"expected a string or a list of strings")
    return [one_line(c) for c in cell if c.strip()]


class CaptionCheck:
    """Keeps the first ``need`` captions of each image and counts images that have fewer."""

    def __init__(self, need: int):
        self.need = need
        self.missing: list[str] = []  # images without any caption
        self.short: list[str] = []  # images with fewer than ``need``

    def take(self, name: str, captions: list[str] | None) -> list[str] | None:
        if not captions:
            self.missing.append(name)
            return None
        if len(captions) < self.need:
            self.short.append(name)
            return None
        return captions[:self.need]

    def report(self, total: int, max_missing: float) -> dict:
        """Fail when more than ``max_missing`` of ``total`` images were dropped; else the summary."""
        dropped = len(self.missing) + len(self.short)
        info = {"images_without_captions": len(self.missing), "images_with_too_few_captions": len(self.short),
                "first_without": self.missing[:SHOW], "first_too_few": self.short[:SHOW]}
        if total and dropped / total > max_missing:
            raise T2IError(
                f"{dropped} of {total} images lack captions (no caption file: {len(self.missing)}"
                f"{', e.g. ' + ', '.join(self.missing[:SHOW]) if self.missing else ''}; fewer than {self.need} lines: "
                f"{len(self.short)}{', e.g. ' + ', '.join(self.short[:SHOW]) if self.short else ''}); "
                f"download.max_missing allows {max_missing:g}")
        return info


def class_number(name: str) -> int:
    """The class number in a class name: ``001.Black_footed_Albatross`` -> 1, ``class_00017`` -> 17."""
    m = re.search(r"\d+", name)
    if not m:
        raise T2IError(f"cannot read a class number from {name!r}")
    return int(m.group())


def seeded_split(keys: list[str], classes: list | None, test_fraction: float, seed: int) -> dict[str, str]:
    """``{key: "train" | "test"}``: class-disjoint when ``classes`` (one per key) are given, else by
    image; a ``test_fraction`` share (at least one class or image) held out, the same for a seed."""
    rng = random.Random(f"split-{seed}")
    units = sorted(set(classes), key=str) if classes is not None else sorted(keys)
    if len(units) < 2:
        raise T2IError(f"cannot split {len(units)} {'class' if classes is not None else 'image'} into train and test")
    rng.shuffle(units)
    held = set(units[:max(1, round(test_fraction * len(units)))])
    unit_of = classes if classes is not None else keys
    return {k: "test" if u in held else "train" for k, u in zip(keys, unit_of)}
