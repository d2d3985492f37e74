"""``oxford-102``: Oxford 102 Category Flowers (Nilsback & Zisserman 2008) with Reed et al.'s captions.

Images (``102flowers.tgz``), labels (``imagelabels.mat``) and the VGG split (``setid.mat``)
come from the Oxford VGG site, md5 pinned; captions and the class-disjoint split (82 train-val /
20 test classes) from ``cvpr2016_flowers.tar.gz`` (see ``reed.py``). Each sample keeps its
original JPEG bytes; its meta has the class (0-based id, name ``class_00001``) and the image's
set in VGG's own split (``vgg_set``: train, val or test), which t2i does not use.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from t2i import T2IError
from t2i.data.download import RemoteFile, extract
from t2i.data.sources import reed
from t2i.data.sources.common import CaptionCheck, captions_per_image, fetch_all, finish_archive
from t2i.params import Params

BASE = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
IMAGES = RemoteFile("102flowers.tgz", (BASE + "102flowers.tgz",), "52808999861908f626f3c1f4e79d11fa")
LABELS = RemoteFile("imagelabels.mat", (BASE + "imagelabels.mat",), "e0620be6f572b9609742df49c70aed4d")
SETID = RemoteFile("setid.mat", (BASE + "setid.mat",), "a5357ecc9cb78c4bef273ce3793fc85c")
EXPECTED = {"train": 7034, "test": 1155}  # asserted when all three files are the official ones
IMAGE_NAME = re.compile(r"image_(\d+)\.jpg$")


def _load_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises ValueError, MatReadError, OSError, ... on a bad file
        raise T2IError(f"cannot read {path.name}: {type(e).__name__}: {e}".splitlines()[0]) from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise T2IError(f"{path.name}: no {', '.join(missing)} variable (has: {', '.join(k for k in mat if not k.startswith('__'))})")
    return {k: np.asarray(mat[k]).ravel().astype(int) for k in keys}


def prepare_oxford(folder: Path, params: Params, progress: bool = True) -> dict:
    captions_file = reed.ARCHIVES["oxford-102"]
    files = [IMAGES, LABELS, SETID]
    fetched = fetch_all([*files, captions_file], params, progress)
    labels = _load_mat(fetched[LABELS.name].path, ("labels",))["labels"]  # (N,) class 1..102 of image i + 1
    sets = _load_mat(fetched[SETID.name].path, ("trnid", "valid", "tstid"))
    vgg_set = {int(i): name for key, name in (("trnid", "train"), ("valid", "val"), ("tstid", "test")) for i in sets[key]}

    work = folder / ".work"  # inside the temporary raw folder: removed below, or with it on failure
    captions = reed.read_caption_archive(fetched[captions_file.name].path, work / "captions")
    extract(fetched[IMAGES.name].path, work / "flowers", progress=progress, select=lambda n: bool(IMAGE_NAME.search(n)))
    paths = {int(IMAGE_NAME.search(p.name).group(1)): p for p in (work / "flowers").rglob("image_*.jpg")}
    if sorted(paths) != list(range(1, len(labels) + 1)):
        raise T2IError(f"{IMAGES.name} holds {len(paths)} images image_*.jpg but {LABELS.name} labels {len(labels)}")

    check = CaptionCheck(captions_per_image(params, 10))
    rows = []
    for i in sorted(paths):
        stem = f"image_{i:05d}"
        caps = check.take(stem, captions.by_image.get(stem))
        if caps is None:
            continue
        number = int(labels[i - 1])
        meta = {"image_id": i, "class_id": number - 1, "class_name": f"class_{number:05d}",
                "file": f"jpg/{stem}.jpg", "vgg_set": vgg_set.get(i, "none")}
        rows.append((f"oxford_{i:05d}", paths[i], caps, captions.split_of(number, stem), meta))
    return finish_archive(folder, work, rows, dataset="oxford-102", params=params, progress=progress, check=check,
                          total=len(paths), captions=captions, fetched=fetched, official_files=files,
                          captions_file=captions_file, expected=EXPECTED)
