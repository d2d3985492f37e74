"""Reed et al.'s caption archives (CVPR 2016): 10 captions per image and class-disjoint splits.

``cvpr2016_cub.tar.gz`` and ``cvpr2016_flowers.tar.gz`` are Google Drive files (ids from the
reedscot/cvpr2016 README). Their checksums are not published, so none is pinned: their
structure is checked instead, their sha256 recorded in info.json, and a user may pin it with
``download.md5``. Only the caption and split members are unpacked (the archives also hold large
Torch feature files). Their layout is found, not assumed:

- ``text_c10/<class folder>/<image stem>.txt``: one caption per line, at any depth;
- the class split files, wherever they sit: ``trainvalclasses.txt`` / ``testclasses.txt`` (or
  ``trainclasses.txt`` + ``valclasses.txt``), or the ``trainvalids.txt`` class numbers of Reed's
  own scripts (indices into ``allclasses.txt``); test is ``allclasses`` minus train-val when only
  the latter is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from t2i import T2IError
from t2i.data.download import RemoteFile, extract
from t2i.data.sources.common import class_number, clean_lines

ARCHIVES = {
    "cub": RemoteFile("cvpr2016_cub.tar.gz", ("gdrive:0B0ywwgffWnLLZW9uVHNjb2JmNlE",)),
    "oxford-102": RemoteFile("cvpr2016_flowers.tar.gz", ("gdrive:0B0ywwgffWnLLcms2WWJQRFNSWXM",)),
}
TEXT_DIR = "text_c10"
SPLIT_FILES = ("allclasses.txt", "trainvalclasses.txt", "testclasses.txt", "trainclasses.txt",
               "valclasses.txt", "trainvalids.txt")


@dataclass
class Captions:
    by_image: dict[str, list[str]]  # image file stem -> its captions, in file order
    train_classes: set[int]  # class numbers (001.Black_footed_Albatross -> 1, class_00017 -> 17)
    test_classes: set[int]

    def split_of(self, class_no: int, what: str) -> str:
        if class_no in self.train_classes:
            return "train"
        if class_no in self.test_classes:
            return "test"
        raise T2IError(f"{what}: class {class_no} is in neither the train-val nor the test split of the caption archive")


def _wanted(name: str) -> bool:
    parts = name.split("/")
    return (TEXT_DIR in parts[:-1] and name.endswith(".txt")) or parts[-1] in SPLIT_FILES


def _lines(path: Path) -> list[str]:
    return clean_lines(path.read_bytes().decode("utf-8", errors="replace"))


def read_caption_archive(archive: Path, work: Path) -> Captions:
    """Unpack the caption and split members of ``archive`` into ``work`` and read them."""
    extract(archive, work, select=_wanted)
    text_dirs = sorted((p for p in work.rglob(TEXT_DIR) if p.is_dir()), key=lambda p: (len(p.parts), str(p)))
    if not text_dirs:
        raise T2IError(f"{archive.name}: no {TEXT_DIR}/ folder of caption files in the archive")
    by_image: dict[str, list[str]] = {}
    for txt in sorted(text_dirs[0].glob("*/*.txt")):
        by_image[txt.stem] = _lines(txt)
    if not by_image:
        raise T2IError(f"{archive.name}: {TEXT_DIR}/ holds no <class>/<image>.txt caption files")

    found: dict[str, Path] = {}
    for p in sorted(work.rglob("*.txt"), key=lambda p: (len(p.parts), str(p))):
        if p.name in SPLIT_FILES and TEXT_DIR not in p.relative_to(work).parts:
            found.setdefault(p.name, p)  # the shallowest copy of each

    def classes(name: str) -> set[int] | None:
        return {class_number(c) for c in _lines(found[name])} if name in found else None

    everything = [class_number(c) for c in _lines(found["allclasses.txt"])] if "allclasses.txt" in found else None
    train = classes("trainvalclasses.txt")
    if train is None and "trainclasses.txt" in found and "valclasses.txt" in found:
        train = classes("trainclasses.txt") | classes("valclasses.txt")
    if train is None and "trainvalids.txt" in found:  # Reed's scripts: 1-based rows of allclasses.txt
        ids = [class_number(x) for x in _lines(found["trainvalids.txt"])]
        train = {everything[i - 1] for i in ids} if everything else set(ids)
    test = classes("testclasses.txt")
    if test is None and train is not None and everything is not None:
        test = set(everything) - train
    if train is None or test is None:
        raise T2IError(f"{archive.name}: no class split files found (need trainvalclasses.txt and testclasses.txt, "
                       f"or trainvalids.txt with allclasses.txt); found: {', '.join(sorted(found)) or 'none'}")
    if train & test:
        raise T2IError(f"{archive.name}: classes {sorted(train & test)[:5]} are in both the train-val and the test split")
    return Captions(by_image, train, test)
