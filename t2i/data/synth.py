"""Synthetic flowers: a deterministic, procedurally drawn stand-in for Oxford-102.

Each image shows one flower whose attributes (petal colour, centre colour, petal count, petal
shape) are what its 10 captions describe, so text really determines the picture. Position,
scale, rotation, background shade and a little colour jitter are nuisance variation that no
caption mentions. A class is a (petal colour, centre colour) pair; the split is class-disjoint,
so the test split holds colour combinations never seen in training.

Same seed, same bytes: every random draw comes from a generator seeded by (seed, image index).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from t2i.data.raw import Sample

PETAL_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 30, 40),
    "orange": (245, 135, 20),
    "yellow": (250, 215, 40),
    "pink": (250, 150, 190),
    "magenta": (210, 40, 160),
    "purple": (120, 45, 165),
    "lavender": (185, 160, 235),
    "blue": (45, 85, 215),
    "white": (245, 245, 240),
    "maroon": (115, 20, 40),
}
CENTRE_COLOURS: dict[str, tuple[int, int, int]] = {
    "yellow": (245, 205, 30),
    "orange": (235, 110, 15),
    "brown": (110, 65, 25),
    "black": (25, 20, 20),
    "green": (70, 160, 50),
}
PETAL_COUNTS = (3, 4, 5, 6, 7, 8)
PETAL_SHAPES = ("round", "pointed")
ATTRIBUTES = ("petal_colour", "centre_colour", "petal_count", "petal_shape")  # the order of ``Attributes``
CAPTIONS_PER_IMAGE = 10

NUMBER_WORDS = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
CENTRE_WORDS = ("center", "centre", "pistil", "stamen")
SHAPE_WORDS = {"round": ("round", "rounded", "oval"), "pointed": ("pointed", "pointy", "sharp")}

# {n} petal count, {p} petal colour, {c} centre colour, {s} petal shape, {w} centre/pistil/stamen.
TEMPLATES = (
    "this flower has {n} {p} petals and a {c} {w}",
    "a flower with {s} {p} petals and a {c} {w}",
    "the petals of this flower are {p} with a {c} {w}",
    "this flower is {p} in color, with {s} petals",
    "this flower has {n} petals that are {p} and {s}",
    "a {p} flower with {n} {s} petals",
    "{n} {p} petals surround the {c} {w} of this flower",
    "this flower has petals that are {p} and a {w} that is {c}",
    "the {c} {w} is surrounded by {s} {p} petals",
    "this {p} flower has {s} petals",
    "a flower with {n} {p} petals",
    "this flower has {p} petals with {s} tips and a {c} {w}",
    "the flower shown has {p} petals and a {c} {w}",
)


# Which attribute each template slot names ({w}, the word for the centre, names none).
SLOTS = {"p": "petal_colour", "c": "centre_colour", "n": "petal_count", "s": "petal_shape"}
_WORDS = {  # every word a slot may hold
    "n": [*NUMBER_WORDS.values(), *map(str, NUMBER_WORDS)],
    "p": list(PETAL_COLOURS),
    "c": list(CENTRE_COLOURS),
    "s": [w for ws in SHAPE_WORDS.values() for w in ws],
    "w": list(CENTRE_WORDS),
}


def _template_regex(template: str) -> re.Pattern:
    out = []
    for piece in re.split(r"(\{\w\})", template):
        if m := re.fullmatch(r"\{(\w)\}", piece):
            out.append(f"(?P<{m[1]}>{'|'.join(_WORDS[m[1]])})")
        else:  # "a" may have become "an" before a vowel
            out.append(" ".join("an?" if w == "a" else re.escape(w) for w in piece.split(" ")))
    return re.compile("".join(out))


_TEMPLATE_RES = [_template_regex(t) for t in TEMPLATES]


@dataclass(frozen=True)
class Attributes:
    petal_colour: str
    centre_colour: str
    petal_count: int
    petal_shape: str


def classes() -> list[tuple[str, str]]:
    """All (petal colour, centre colour) pairs; the index is the class id."""
    return [(p, c) for p in PETAL_COLOURS for c in CENTRE_COLOURS]


def class_name(class_id: int) -> str:
    p, c = classes()[class_id]
    return f"{p} petals, {c} centre"


def test_classes(seed: int, test_fraction: float) -> set[int]:
    """Hold out a fraction of classes, keeping every single colour present in training.

    Training sees each petal and centre colour, but never the held-out combinations, so
    the test split measures composition (as in Reed et al.'s class-disjoint split).
    """
    table = classes()
    n_test = max(1, round(test_fraction * len(table)))
    order = np.random.default_rng([seed, 1]).permutation(len(table))
    held: set[int] = set()
    for cid in order.tolist():
        if len(held) == n_test:
            break
        p, c = table[cid]
        train = [table[i] for i in range(len(table)) if i not in held and i != cid]
        if any(tp == p for tp, _ in train) and any(tc == c for _, tc in train):
            held.add(cid)
    return held


def captions(attrs: Attributes, rng: np.random.Generator, n: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """``n`` captions from distinct templates, with random synonyms filled in."""
    picks = rng.choice(len(TEMPLATES), size=n, replace=False)
    out = []
    for t in picks.tolist():
        count = attrs.petal_count
        words = dict(
            n=NUMBER_WORDS[count] if rng.random() < 0.8 else str(count),
            p=attrs.petal_colour,
            c=attrs.centre_colour,
            s=SHAPE_WORDS[attrs.petal_shape][rng.integers(3)],
            w=CENTRE_WORDS[rng.integers(len(CENTRE_WORDS))],
        )
        out.append(fill(TEMPLATES[t], words))
    return out


def fill(template: str, words: dict[str, str]) -> str:
    """``template`` with its slots filled, "a" turned into "an" before a vowel."""
    return re.sub(r"\ba (?=[aeiou])", "an ", template.format(**words))


def parse(caption: str, templates: tuple[str, ...] = TEMPLATES) -> tuple[int, dict[str, str]]:
    """Which of ``templates`` a caption was written from, and the words in its slots; a
    ValueError for a caption none of them wrote (or, impossibly, more than one)."""
    regexes = _TEMPLATE_RES if templates is TEMPLATES else [_template_regex(t) for t in templates]
    hits = [(i, m) for i, r in enumerate(regexes) if (m := r.fullmatch(caption))]
    if len(hits) != 1:
        raise ValueError(f"caption {caption!r} matches {len(hits)} templates, expected one")
    return hits[0][0], hits[0][1].groupdict()


def named(caption: str) -> list[str]:
    """The attributes a template caption names, in ``Attributes`` order."""
    slots = parse(caption)[1]
    return [a for a in ATTRIBUTES if any(SLOTS.get(k) == a for k in slots)]


def alter(caption: str, attribute: str, value: str | int) -> str:
    """``caption`` with the word of ``attribute`` (one it names) saying ``value`` instead, in the
    same style (a count as a word or as digits, the same synonym slot for a shape)."""
    t, words = parse(caption)
    slot = next((k for k, a in SLOTS.items() if a == attribute and k in words), None)
    if slot is None:
        raise ValueError(f"caption {caption!r} does not name {attribute}")
    old = words[slot]
    if slot == "n":
        words["n"] = NUMBER_WORDS[int(value)] if old in NUMBER_WORDS.values() else str(int(value))
    elif slot == "s":
        shape = next(k for k, ws in SHAPE_WORDS.items() if old in ws)
        words["s"] = SHAPE_WORDS[str(value)][SHAPE_WORDS[shape].index(old)]
    else:
        words[slot] = str(value)
    return fill(TEMPLATES[t], words)


def _petal(shape: str, length: float, width: float, angle: float, cx: float, cy: float) -> list:
    """Polygon of one petal from the flower centre outwards along ``angle``."""
    s = np.linspace(0.0, 1.0, 24)
    if shape == "round":  # an ellipse along the axis
        half = width / 2 * np.sqrt(np.clip(1 - (2 * s - 1) ** 2, 0, 1))
    else:  # a lens narrowing to a sharp tip
        half = width / 2 * np.sqrt(np.clip(4 * s * (1 - s), 0, 1)) * (1 - s) ** 0.6 * 1.4
    along = np.concatenate([s, s[::-1]]) * length
    across = np.concatenate([half, -half[::-1]])
    ca, sa = math.cos(angle), math.sin(angle)
    xs = cx + along * ca - across * sa
    ys = cy + along * sa + across * ca
    return list(zip(xs.tolist(), ys.tolist()))


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int = 12) -> tuple:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in rgb)


def _shade(rgb: tuple, factor: float) -> tuple:
    return tuple(int(v * factor) for v in rgb)


def draw_flower(attrs: Attributes, rng: np.random.Generator, size: int, supersample: int = 2) -> Image.Image:
    """Draw one flower (at ``supersample`` x ``size``, then downsample with antialiasing)."""
    big = size * supersample
    # Background: a green, olive or grey shade with a soft vertical gradient.
    base = np.array([(60, 110, 50), (95, 110, 60), (100, 105, 100), (40, 70, 45)][rng.integers(4)])
    base = base * rng.uniform(0.7, 1.2)
    ramp = np.linspace(1.1, 0.85, big)[:, None, None]
    bg = np.clip(base[None, None, :] * ramp, 0, 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(bg, big, axis=1), "RGB")
    pen = ImageDraw.Draw(image)

    scale = rng.uniform(0.7, 1.0)
    length = big * 0.36 * scale
    cx = big / 2 + rng.uniform(-0.1, 0.1) * big
    cy = big / 2 + rng.uniform(-0.1, 0.1) * big
    k = attrs.petal_count
    width = min(2 * length * math.sin(math.pi / k) * 1.05, 0.8 * length)
    turn = rng.uniform(0, 2 * math.pi)
    petal_rgb = _jitter(PETAL_COLOURS[attrs.petal_colour], rng)
    edge = max(1, big // 64)
    for i in range(k):
        poly = _petal(attrs.petal_shape, length, width, turn + 2 * math.pi * i / k, cx, cy)
        pen.polygon(poly, fill=petal_rgb, outline=_shade(petal_rgb, 0.7), width=edge)
    r = length * 0.24
    centre_rgb = _jitter(CENTRE_COLOURS[attrs.centre_colour], rng)
    pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=centre_rgb, outline=_shade(centre_rgb, 0.7), width=edge)
    return image.resize((size, size), Image.LANCZOS)


def flowers(num_images: int, size: int = 128, seed: int = 0, test_fraction: float = 0.2) -> Iterator[Sample]:
    """Yield ``num_images`` samples, byte-for-byte the same for the same arguments."""
    table = classes()
    held = test_classes(seed, test_fraction)
    for i in range(num_images):
        rng = np.random.default_rng([seed, 0, i])
        cid = int(rng.integers(len(table)))
        p, c = table[cid]
        attrs = Attributes(p, c, int(rng.choice(PETAL_COUNTS)), str(rng.choice(PETAL_SHAPES)))
        key = f"flower_{i:06d}"
        meta = {
            "image_id": i,
            "class_id": cid,
            "class_name": class_name(cid),
            "attributes": asdict(attrs),
        }
        split = "test" if cid in held else "train"
        image, caps = draw_flower(attrs, rng, size), captions(attrs, rng)
        meta["named"] = [named(c) for c in caps]  # per caption, the attributes it names
        yield Sample(key, image, caps, split, meta)


def write(folder: Path, num_images: int, size: int, seed: int, test_fraction: float, progress=None) -> dict:
    """Write the dataset in the raw layout to ``folder`` (a temporary one); return a summary."""
    from t2i.data.raw import RawWriter

    counts = {"train": 0, "test": 0}
    with RawWriter(folder) as out:
        for s in flowers(num_images, size, seed, test_fraction):
            out.add(s)
            counts[s.split] += 1
            if progress:
                progress()
    held = test_classes(seed, test_fraction)
    info = {
        "dataset": "synthetic-flowers",
        "num_images": num_images,
        "image_size": size,
        "seed": seed,
        "counts": counts,
        "classes": [
            {"class_id": i, "class_name": class_name(i), "split": "test" if i in held else "train"}
            for i in range(len(classes()))
        ],
    }
    return info
