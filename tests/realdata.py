"""Miniature CUB-200-2011 and Oxford-102 source files, laid out exactly like the real ones.

``cub_files(folder)`` writes ``CUB_200_2011.tgz`` (top folder ``CUB_200_2011/``, class folders
like ``001.Black_footed_Albatross``, the metadata text files, ``attributes.txt`` beside the top
folder) and ``cvpr2016_cub.tar.gz`` (``text_c10/<class>/<image>.txt`` with 10 captions, the class
split files, Torch feature files the pipeline must skip). ``oxford_files(folder)`` writes
``102flowers.tgz`` (``jpg/image_00001.jpg``), ``imagelabels.mat`` and ``setid.mat`` (real MATLAB
files, written with scipy) and ``cvpr2016_flowers.tar.gz`` (split given the way Reed's own scripts
read it: ``allclasses.txt`` + ``trainvalids.txt``). Images are small JPEGs of coloured shapes whose
colour the captions name. Both return ``{file name: md5}``.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (200, 30, 40), "blue": (40, 80, 210), "yellow": (240, 210, 40),
           "green": (40, 160, 60), "black": (20, 20, 20), "white": (240, 240, 235)}
CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
               "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet"]
CUB_TEST = {3, 6}  # class numbers held out, as Reed's split holds out whole classes
FLOWER_CLASSES = 5
FLOWER_TEST = {2, 5}
ATTRIBUTES = {1: "has_bill_shape::curved_(up_or_down)", 2: "has_bill_shape::dagger", 3: "has_bill_shape::hooked",
              10: "has_wing_color::blue", 11: "has_wing_color::red", 12: "has_wing_color::yellow",
              20: "has_primary_color::blue", 21: "has_primary_color::red", 22: "has_primary_color::yellow",
              30: "has_size::small_(5_-_9_in)", 31: "has_size::large_(16_-_32_in)", 40: "has_eye_color::black"}


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def picture(colour: str, size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """A JPEG: a shape of ``colour`` inside ``box`` (x, y, w, h) on a grey background."""
    im = Image.new("RGB", size, (128, 128, 120))
    x, y, w, h = box
    ImageDraw.Draw(im).ellipse((x, y, x + w, y + h), fill=COLOURS[colour])
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def captions(colour: str, thing: str, n: int = 10) -> str:
    forms = ["this {t} is {c}.", "a {c} {t} on a grey background.", "the {t} is {c} all over.",
             "a small {c} {t}.", "this {c} {t} is round.", "{c} {t}, seen from the side.",
             "a {t} that is mostly {c}.", "this {t} has a {c} body.",
             "the {t} is {c} with darker edges.", "a bright {c} {t}."]
    return "".join(forms[i % len(forms)].format(t=thing, c=colour) + "\n" for i in range(n))


def write_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A .tgz / .tar.gz with ``members`` (name -> bytes), directories implied, plus symlinks."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_300_000_000
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def cub_members(per_class: int = 4, skip_captions: tuple[str, ...] = (), short_captions: tuple[str, ...] = (),
                split_files: bool = True) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(CUB_200_2011.tgz members, cvpr2016_cub.tar.gz members)."""
    images, labels, boxes, attrs, texts = [], [], [], [], {}
    files: dict[str, bytes] = {}
    colours = list(COLOURS)
    image_id = 0
    for c, cls in enumerate(CUB_CLASSES, 1):
        species = cls.split(".", 1)[1].replace("footed", "Footed")
        colour = colours[(c - 1) % len(colours)]
        for j in range(per_class):
            image_id += 1
            rel = f"{cls}/{species}_{j + 1:04d}_{790000 + image_id}.jpg"
            size = (48 + 4 * j, 40)
            box = (6 + j, 8, 24, 18 + j)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            boxes.append(f"{image_id} {box[0]}.0 {box[1]}.0 {box[2]}.0 {box[3]}.0")
            files[f"CUB_200_2011/images/{rel}"] = picture(colour, size, box)
            for attr in ATTRIBUTES:
                present = attr in ({1, 11, 21, 30} if colour == "red" else {2, 10, 20, 31, 40})
                attrs.append(f"{image_id} {attr} {int(present)} {4 if present else 1} 12.5")
            stem = Path(rel).stem
            if stem not in skip_captions:
                n = 3 if stem in short_captions else 10
                texts[f"cvpr2016_cub/text_c10/{rel[:-4]}.txt"] = captions(colour, "bird", n).encode()
    meta = {
        "CUB_200_2011/images.txt": images, "CUB_200_2011/image_class_labels.txt": labels,
        "CUB_200_2011/bounding_boxes.txt": boxes,
        "CUB_200_2011/classes.txt": [f"{i} {c}" for i, c in enumerate(CUB_CLASSES, 1)],
        "CUB_200_2011/train_test_split.txt": [f"{i} {i % 2}" for i in range(1, image_id + 1)],
        "CUB_200_2011/attributes/image_attribute_labels.txt": attrs,
        "CUB_200_2011/attributes/certainties.txt": ["1 not visible", "2 guessing", "3 probably", "4 definitely"],
        "attributes.txt": [f"{i} {name}" for i, name in ATTRIBUTES.items()],
    }
    tgz = {"CUB_200_2011/README": b"CUB-200-2011 miniature\n",
           **{k: ("\n".join(v) + "\n").encode() for k, v in meta.items()},
           "CUB_200_2011/parts/part_locs.txt": b"1 1 0.0 0.0 0\n", **files}
    trainval = [c for i, c in enumerate(CUB_CLASSES, 1) if i not in CUB_TEST]
    splits = {"allclasses.txt": CUB_CLASSES, "trainvalclasses.txt": trainval,
              "testclasses.txt": [c for i, c in enumerate(CUB_CLASSES, 1) if i in CUB_TEST],
              "trainclasses.txt": trainval[:-1], "valclasses.txt": trainval[-1:]}
    caps = {**texts, **{f"cvpr2016_cub/images/{c}.t7": b"\x00" * 512 for c in CUB_CLASSES},
            **{f"cvpr2016_cub/text_c10/{c}.t7": b"\x00" * 256 for c in CUB_CLASSES}}
    if split_files:
        caps.update({f"cvpr2016_cub/{k}": ("\n".join(v) + "\n").encode() for k, v in splits.items()})
    return tgz, caps


def cub_files(folder: Path, **kw) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    tgz, caps = cub_members(**kw)
    write_tar(folder / "CUB_200_2011.tgz", tgz)
    write_tar(folder / "cvpr2016_cub.tar.gz", caps)
    return {name: md5(folder / name) for name in ("CUB_200_2011.tgz", "cvpr2016_cub.tar.gz")}


def oxford_files(folder: Path, per_class: int = 4) -> dict[str, str]:
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    colours = list(COLOURS)
    n = FLOWER_CLASSES * per_class
    labels = np.array([[1 + (i % FLOWER_CLASSES) for i in range(n)]], dtype=np.uint8)  # (1, N), classes interleaved
    jpgs, texts = {}, {}
    for i in range(1, n + 1):
        label = int(labels[0, i - 1])
        colour = colours[label - 1]
        jpgs[f"jpg/image_{i:05d}.jpg"] = picture(colour, (44, 52), (8, 10, 26, 30))
        texts[f"flowers/cvpr2016_flowers/text_c10/class_{label:05d}/image_{i:05d}.txt"] = captions(colour, "flower").encode()
    write_tar(folder / "102flowers.tgz", jpgs)
    savemat(folder / "imagelabels.mat", {"labels": labels})
    ids = np.arange(1, n + 1)
    savemat(folder / "setid.mat", {"trnid": ids[0::3][None].astype(np.uint16), "valid": ids[1::3][None].astype(np.uint16),
                                   "tstid": ids[2::3][None].astype(np.uint16)})
    classes = [f"class_{c:05d}" for c in range(1, FLOWER_CLASSES + 1)]
    trainval_ids = [str(c) for c in range(1, FLOWER_CLASSES + 1) if c not in FLOWER_TEST]
    write_tar(folder / "cvpr2016_flowers.tar.gz", {
        **texts, "flowers/allclasses.txt": ("\n".join(classes) + "\n").encode(),
        "flowers/trainvalids.txt": ("\n".join(trainval_ids) + "\n").encode(),
        **{f"flowers/cvpr2016_flowers/images/{c}.t7": b"\x00" * 512 for c in classes}})
    return {name: md5(folder / name) for name in ("102flowers.tgz", "imagelabels.mat", "setid.mat", "cvpr2016_flowers.tar.gz")}
