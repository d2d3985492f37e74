"""``cub``: CUB-200-2011 birds (Wah et al. 2011) with Reed et al.'s captions.

Images, labels and boxes come from ``CUB_200_2011.tgz`` (Caltech data repository, md5 pinned);
captions and the class-disjoint split (150 train-val / 50 test classes) from
``cvpr2016_cub.tar.gz`` (see ``reed.py``). Each sample keeps its original JPEG bytes and carries
in its meta the bounding box (the shard stage crops around it), all of its 312 attribute labels
that are marked present (``cub_attributes``: ``[attribute id, certainty]`` pairs) and, for the
evaluator, one value of each attribute group in ``EVAL_ATTRIBUTES``.
"""

from __future__ import annotations

from pathlib import Path

from t2i import T2IError
from t2i.data.download import RemoteFile, extract
from t2i.data.sources import reed
from t2i.data.sources.common import CaptionCheck, captions_per_image, fetch_all, finish_archive
from t2i.params import Params

IMAGES = RemoteFile("CUB_200_2011.tgz", ("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",),
                    "97eceeb196236b17998738112f37df78")
EXPECTED = {"train": 8855, "test": 2933}  # asserted when CUB_200_2011.tgz is the official archive
META_FILES = ("images.txt", "image_class_labels.txt", "bounding_boxes.txt", "classes.txt",
              "image_attribute_labels.txt", "attributes.txt")
# Attribute groups the evaluator learns and attribute accuracy reports (the image's value of a
# group: the one attribute marked present with certainty "probably" or "definitely"; an image
# with none or several such is left out of that group).
EVAL_ATTRIBUTES = {"has_primary_color": "primary_color", "has_wing_color": "wing_color",
                   "has_bill_shape": "bill_shape", "has_size": "size"}
MIN_CERTAINTY = 3  # CUB certainties: 1 not visible, 2 guessing, 3 probably, 4 definitely


def _table(path: Path, width: int) -> dict[int, list[str]]:
    """``<id> <field> ...`` lines -> {id: the first ``width`` fields after it}."""
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < width + 1 or not fields[0].isdigit():
            raise T2IError(f"{path.name}: line {n} is malformed: {line[:80]!r}")
        out[int(fields[0])] = fields[1:width + 1]
    return out


def _find(work: Path, name: str) -> Path:
    hits = sorted(work.rglob(name), key=lambda p: (len(p.parts), str(p)))
    if not hits:
        raise T2IError(f"{IMAGES.name}: no {name} in the archive")
    return hits[0]


def read_attributes(work: Path) -> dict[int, dict]:
    """{image id: {"present": [[attribute id, certainty], ...], "eval": {group: value}}}."""
    names = {i: f[0] for i, f in _table(_find(work, "attributes.txt"), 1).items()}  # has_bill_shape::hooked
    out: dict[int, dict] = {}
    candidates: dict[tuple[int, str], list[tuple[int, str]]] = {}
    path = _find(work, "image_attribute_labels.txt")
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        f = line.split()  # image id, attribute id, is_present, certainty id, time (a few lines have extra fields)
        if not f:
            continue
        if len(f) < 4 or not all(x.isdigit() for x in f[:4]):
            raise T2IError(f"{path.name}: line {n} is malformed: {line[:80]!r}")
        image, attr, present, certainty = map(int, f[:4])
        if not present:
            continue
        out.setdefault(image, {"present": [], "eval": {}})["present"].append([attr, certainty])
        group, _, value = names.get(attr, "").partition("::")
        if group in EVAL_ATTRIBUTES and certainty >= MIN_CERTAINTY:
            candidates.setdefault((image, group), []).append((certainty, value))
    for (image, group), values in candidates.items():
        best = max(c for c, _ in values)
        top = [v for c, v in values if c == best]
        if len(top) == 1:
            out[image]["eval"][EVAL_ATTRIBUTES[group]] = top[0]
    return out


def prepare_cub(folder: Path, params: Params, progress: bool = True) -> dict:
    captions_file = reed.ARCHIVES["cub"]
    fetched = fetch_all([IMAGES, captions_file], params, progress)
    work = folder / ".work"  # inside the temporary raw folder: removed below, or with it on failure
    captions = reed.read_caption_archive(fetched[captions_file.name].path, work / "captions")
    root = work / "cub"
    extract(fetched[IMAGES.name].path, root, progress=progress,
            select=lambda n: n.rsplit("/", 1)[-1] in META_FILES or ("/images/" in n and n.lower().endswith(".jpg")))
    base = _find(root, "images.txt").parent
    images = _table(base / "images.txt", 1)
    labels = _table(_find(root, "image_class_labels.txt"), 1)
    boxes = _table(_find(root, "bounding_boxes.txt"), 4)
    class_names = {i: f[0] for i, f in _table(_find(root, "classes.txt"), 1).items()}
    attributes = read_attributes(root)

    check = CaptionCheck(captions_per_image(params, 10))
    rows = []
    for image_id in sorted(images):
        rel = images[image_id][0]
        caps = check.take(rel, captions.by_image.get(Path(rel).stem))
        if caps is None:
            continue
        if image_id not in labels or image_id not in boxes:
            raise T2IError(f"{IMAGES.name}: image {image_id} ({rel}) has no class label or bounding box")
        number = int(labels[image_id][0])
        name = class_names.get(number, rel.split("/")[0])
        attrs = attributes.get(image_id, {"present": [], "eval": {}})
        meta = {"image_id": image_id, "class_id": number - 1, "class_name": name, "file": rel,
                "bbox": [float(x) for x in boxes[image_id]], "attributes": attrs["eval"],
                "cub_attributes": attrs["present"]}
        rows.append((f"cub_{image_id:05d}", base / "images" / rel, caps, captions.split_of(number, rel), meta))
    return finish_archive(folder, work, rows, dataset="cub", params=params, progress=progress, check=check,
                          total=len(images), captions=captions, fetched=fetched, official_files=[IMAGES],
                          captions_file=captions_file, expected=EXPECTED,
                          eval_attributes=sorted(EVAL_ATTRIBUTES.values()))
