"""Phrasing: does the generator follow captions worded unlike any of the dataset's templates?

Users do not write the synthetic dataset's 13 templates. For up to ``MAX_IMAGES`` test images,
this metric writes a caption for the image's attributes from ``NOVEL_TEMPLATES`` (kept out of
training: no training caption has their wording), draws one image from it and one from the
image's own template caption with the same noise (one that names both colours, as every novel
caption does, where the samples say which attributes each caption names), and reads both with
the evaluator:

- ``phrasing/<attr>/novel``, ``phrasing/<attr>/template``: attribute accuracy for petal and
  centre colour;
- ``phrasing/<attr>/ratio`` = novel / template (1.0: the wording does not matter).

Needs the text encoder the generator was trained with and a dataset with those attributes
(synthetic flowers); skipped otherwise, with the reason.
"""

from __future__ import annotations

import numpy as np
import torch

from t2i.data.synth import NUMBER_WORDS
from t2i.named import attribute_labels
from t2i.metrics import EvalContext, MetricSkipped, register
from t2i.named import knows_named
from t2i.probes import pick_naming

MAX_IMAGES = 256
ATTRIBUTES = ("petal_colour", "centre_colour")
# {p} petal colour, {c} centre colour, {n} petal count (word), {s} petal shape.
NOVEL_TEMPLATES = (
    "{p} petals ringed around a {c} eye",
    "a {p} bloom with a {c} heart",
    "close-up of a blossom: {p} petals, {c} in the middle",
    "{n} {s} petals in {p}, the middle is {c}",
    "i see a {p} blossom whose core is {c}",
    "{c} disc, {p} petals all around it",
    "a {s}-petalled {p} flower, its centre {c}",
    "picture of a flower, petals {p} and middle {c}",
)


def novel_captions(metas: list[dict], gen: torch.Generator) -> list[str]:
    """One caption per meta's attributes, from a seeded pick of ``NOVEL_TEMPLATES``."""
    picks = torch.randint(len(NOVEL_TEMPLATES), (len(metas),), generator=gen).tolist()
    out = []
    for t, m in zip(picks, metas):
        a = m["attributes"]
        words = dict(p=a["petal_colour"], c=a["centre_colour"], s=a.get("petal_shape", ""),
                     n=NUMBER_WORDS.get(a.get("petal_count"), str(a.get("petal_count", ""))))
        out.append(NOVEL_TEMPLATES[t].format(**words))
    return out


@register("phrasing")
def phrasing(ctx: EvalContext) -> dict[str, float]:
    if ctx.generate is None or ctx.encode is None:
        raise MetricSkipped("phrasing needs the generator and its text encoder")
    attrs = ctx.evaluator.attributes
    if not all(a in attrs and all(a in m.get("attributes", {}) for m in ctx.meta) for a in ATTRIBUTES):
        raise MetricSkipped(f"phrasing needs {' and '.join(ATTRIBUTES)} labels (synthetic flowers)")
    gen = torch.Generator().manual_seed(ctx.seed)
    idx = torch.randperm(len(ctx.meta), generator=gen)[:MAX_IMAGES]  # (n,)
    metas = [ctx.meta[i] for i in idx.tolist()]
    # Rounded to float16 like the embedded shards' vectors, so only the wording differs.
    novel = torch.from_numpy(np.asarray(ctx.encode(novel_captions(metas, gen)), np.float16).astype(np.float32))
    z = torch.randn(len(idx), ctx.z_dim, generator=gen)  # the same noise for both wordings
    template = ctx.emb[idx].clone()  # the image's own caption; where known, one naming both colours
    if knows_named(metas):
        for j, c in pick_naming(metas, ATTRIBUTES, gen):
            template[j] = ctx.all_emb[idx[j], c]
    read = {"novel": ctx.score(ctx.generate(z, novel))["logits"],
            "template": ctx.score(ctx.generate(z, template))["logits"]}
    labels = attribute_labels(metas, {a: attrs[a] for a in ATTRIBUTES})
    out: dict[str, float] = {"phrasing/images": float(len(idx))}
    for a, y in labels.items():
        known = y >= 0
        for which, logits in read.items():
            out[f"phrasing/{a}/{which}"] = (logits[a][known].argmax(1) == y[known]).float().mean().item()
        out[f"phrasing/{a}/ratio"] = out[f"phrasing/{a}/novel"] / max(out[f"phrasing/{a}/template"], 1e-12)
    return out
