"""Attribute probes: fixed captions that ask whether D checks, and G draws, what a caption names.

A source whose samples say which attributes each caption names (``meta["named"]``, one list per
caption; synthetic flowers) gets, from the embed stage (which holds the text model), a
``probes.pt`` beside its embedded shards:

- ``d_check``: per test image and attribute, a caption that names the attribute (a seeded pick)
  and the same caption with that attribute's word changed to another value (``synth.alter``).
  A scorer of image-caption pairs (D, or the grounding) checks the attribute when it scores
  the true caption above the changed one; ``caption_check`` returns the share of images where
  it does, ties counting half (0.5: it does not look).
- ``g_check``: captions that name all four attributes, for colour pairs seen in training and for
  the test split's unseen ones; the evaluate stage reads G's images from them with the evaluator.
- ``pairs``: two wordings of one test flower, and one wording with its colours swapped, for the
  cosines of a text space (``t2i.ground.report``).

The train stage logs ``d_check`` every epoch, and what G draws from the seen ``g_check`` captions
read by the outline (``t2i.outline.outline_check``); the evaluate stage writes ``d_check`` and
``g_check`` to metrics.json, the ground stage its own ``ground_check`` and the cosines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from t2i.data import synth
from t2i.io import save_torch
from t2i.modes import evaluating
from t2i.named import knows_named

FILE = "probes.pt"
SEED = 0  # the probes are one fixed set: the same for every model and every evaluate.seed
G_CHECK_CAPTIONS = 256  # per set (seen, unseen)
# Training templates with the one slot they lack added: each names all four attributes.
ALL_FOUR = (
    "this flower has {n} {s} {p} petals and a {c} {w}",
    "a flower with {n} {s} {p} petals and a {c} {w}",
    "{n} {s} {p} petals surround the {c} {w} of this flower",
)


def pick_naming(metas: list[dict], attrs: tuple[str, ...], gen: torch.Generator) -> list[tuple[int, int]]:
    """Per sample whose ``meta["named"]`` has a caption naming every one of ``attrs``: (sample
    index, one such caption's index, picked uniformly with ``gen``). Samples without one are left out."""
    out = []
    for i, m in enumerate(metas):
        ok = [c for c, named in enumerate(m["named"]) if set(attrs) <= set(named)]
        if ok:
            out.append((i, ok[int(torch.randint(len(ok), (1,), generator=gen))]))
    return out


def _values(attr: str) -> list:
    return {"petal_colour": list(synth.PETAL_COLOURS), "centre_colour": list(synth.CENTRE_COLOURS),
            "petal_count": list(synth.PETAL_COUNTS), "petal_shape": list(synth.PETAL_SHAPES)}[attr]


def all_four_caption(a: dict, rng: np.random.Generator) -> str:
    """A caption naming every attribute of ``a`` (a synthetic flower's ``attributes``)."""
    words = dict(n=synth.NUMBER_WORDS[a["petal_count"]], p=a["petal_colour"], c=a["centre_colour"],
                 s=synth.SHAPE_WORDS[a["petal_shape"]][rng.integers(3)],
                 w=synth.CENTRE_WORDS[rng.integers(len(synth.CENTRE_WORDS))])
    return synth.fill(ALL_FOUR[rng.integers(len(ALL_FOUR))], words)


def probe_captions(test: list[tuple[str, list[str], dict]], train_metas: list[dict], seed: int = SEED) -> dict | None:
    """The probe captions for the test samples ``(key, captions, meta)`` and the training metas;
    None when the samples do not say which attributes their captions name."""
    if not knows_named([m for _, _, m in test]) or not knows_named(train_metas):
        return None
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    metas = [m for _, _, m in test]
    d_check = {}
    for attr in synth.ATTRIBUTES:
        rows = {"index": [], "true": [], "altered": []}
        for i, c in pick_naming(metas, (attr,), gen):
            value = metas[i]["attributes"][attr]
            others = [v for v in _values(attr) if v != value]
            caption = test[i][1][c]
            rows["index"].append(i)
            rows["true"].append(caption)
            rows["altered"].append(synth.alter(caption, attr, others[rng.integers(len(others))]))
        d_check[attr] = rows
    pairs = {"seen": sorted({(m["attributes"]["petal_colour"], m["attributes"]["centre_colour"]) for m in train_metas}),
             "unseen": sorted({(m["attributes"]["petal_colour"], m["attributes"]["centre_colour"]) for m in metas})}
    g_check = {}
    for name, colours in pairs.items():
        attrs = []
        for k in range(G_CHECK_CAPTIONS):  # every pair in turn, count and shape at random
            p, c = colours[k % len(colours)]
            attrs.append({"petal_colour": p, "centre_colour": c, "petal_count": int(rng.choice(synth.PETAL_COUNTS)),
                          "petal_shape": str(rng.choice(synth.PETAL_SHAPES))})
        g_check[name] = {"captions": [all_four_caption(a, rng) for a in attrs], "attributes": attrs}
    return {"keys": [k for k, _, _ in test], "d_check": d_check, "g_check": g_check,
            "pairs": wording_pairs(test, np.random.default_rng(seed + 1))}


def wording_pairs(test: list[tuple[str, list[str], dict]], rng: np.random.Generator,
                  n: int = G_CHECK_CAPTIONS) -> dict:
    """Caption pairs of up to ``n`` test flowers, for the cosines of a text space: ``wording``,
    two captions of one flower in two templates that both name its petal and centre colours;
    ``swapped``, the first of them and the same words with the two colours swapped."""
    pairs = {"wording": {"a": [], "b": []}, "swapped": {"a": [], "b": []}}
    for _, captions, meta in test:
        both = {}  # template -> a caption of it naming both colours
        for c, named in zip(captions, meta["named"]):
            if {"petal_colour", "centre_colour"} <= set(named):
                both.setdefault(synth.parse(c)[0], c)
        if len(both) < 2:
            continue
        a, b = (both[t] for t in rng.choice(sorted(both), 2, replace=False))
        t, words = synth.parse(a)
        pairs["wording"]["a"].append(a), pairs["wording"]["b"].append(b)
        pairs["swapped"]["a"].append(a)
        pairs["swapped"]["b"].append(synth.fill(synth.TEMPLATES[t], {**words, "p": words["c"], "c": words["p"]}))
        if len(pairs["wording"]["a"]) == n:
            break
    return pairs


def with_embeddings(spec: dict, lookup: Callable[[list[str]], np.ndarray]) -> dict:
    """``spec`` (from ``probe_captions``) with every caption list's embeddings beside it, as float16
    tensors: ``lookup(captions) -> (n, D)``, the embed stage's caption cache."""
    def vectors(captions: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.asarray(lookup(captions), np.float16))

    out = {**spec, "d_check": {}, "g_check": {}, "pairs": {}}
    for attr, rows in spec["d_check"].items():
        out["d_check"][attr] = {**rows, "index": torch.tensor(rows["index"]),
                                "true_emb": vectors(rows["true"]), "altered_emb": vectors(rows["altered"])}
    for name, rows in spec["g_check"].items():
        out["g_check"][name] = {**rows, "emb": vectors(rows["captions"])}
    for name, rows in spec["pairs"].items():
        out["pairs"][name] = {**rows, "a_emb": vectors(rows["a"]), "b_emb": vectors(rows["b"])}
    return out


def save_probes(probes: dict, folder: Path) -> None:
    save_torch(probes, Path(folder) / FILE)


def load_probes(folder: Path) -> dict | None:
    """The probes beside embedded shards, or None when the source has none."""
    path = Path(folder) / FILE
    return torch.load(path, weights_only=True) if path.is_file() else None


@torch.no_grad()
def caption_check(D: torch.nn.Module, images: torch.Tensor, probes: dict, keys: list[str], batch_size: int = 64,
                  device: str = "cpu") -> dict[str, float]:
    """Per attribute, the share of test images (float (N, 3, S, S) in [-1, 1], sample keys
    ``keys``; probes of other keys are left out) for which ``D(images, emb) -> (B,)`` (a
    matching-aware discriminator, or any scorer of image-caption pairs such as
    ``t2i.ground.Grounding``) scores the true caption above the one with that attribute changed;
    ties count half. D runs in eval mode (no batch statistics,
    no random draws) and is left in the mode it was in, each of its submodules."""
    where = {k: n for n, k in enumerate(keys)}
    at = torch.tensor([where.get(k, -1) for k in probes["keys"]])  # probe image -> row of images
    with evaluating(D):  # every submodule back in its own mode afterwards (a frozen text head stays in eval)
        out = {}
        for attr, rows in probes["d_check"].items():
            has = at[rows["index"]] >= 0
            idx, true, alt = at[rows["index"]][has], rows["true_emb"][has], rows["altered_emb"][has]
            if not len(idx):
                continue
            s_true, s_alt = [], []
            for lo in range(0, len(idx), batch_size):
                sl = slice(lo, lo + batch_size)
                img = images[idx[sl]].to(device)
                s_true.append(D(img, true[sl].float().to(device)).float().cpu())
                s_alt.append(D(img, alt[sl].float().to(device)).float().cpu())
            t, a = torch.cat(s_true), torch.cat(s_alt)
            out[attr] = ((t > a).float() + 0.5 * (t == a).float()).mean().item()
        return out
