"""Silhouette: does a generated flower have separate petals, as many and as shaped as its caption
says? Read off its outline by geometry (``t2i.outline``), with no learned weights.

Every other form reading (the evaluator's count and shape heads, ``d_check``, ``g_check``) is a
network trained with the same augmentation as G's critics, and G can learn marks that such
networks read as "eight petals" without drawing any (docs/experiments.md, the classifier critic
and the grounding of 45 epochs). This one cannot be pleased that way: it sees only the outline.

Metrics (``real`` on the test images, ``fake`` on one image per pair, drawn with seeded noise):

- ``silhouette/petalled/{real,fake}``: the share of images with regularity >= ``PETALLED``
  (a k-fold outline: separate petals). 0 = every image a blob.
- ``silhouette/regularity/{real,fake}``: its mean.
- ``silhouette/count/{real,fake}`` on the pairs whose caption names the count,
  ``silhouette/shape/{real,fake}`` on those naming the shape: the share read as named;
  ``.../chance``: the most common named value's share (a constant guess). Count and shape
  assume a k-fold outline: on blobs they are noise, so read them only where ``petalled`` is
  well above 0.

Skipped for datasets whose samples do not carry a petal count and shape (only synthetic flowers
do). The train stage logs the same readings after every epoch (``t2i.outline.outline_check``).
"""

from __future__ import annotations

import torch

from t2i.metrics import EvalContext, MetricSkipped, register
from t2i.named import knows_named
from t2i.outline import PETALLED, read
from t2i.probes import pick_naming


@register("silhouette")
def silhouette(ctx: EvalContext) -> dict[str, float]:
    if not knows_named(ctx.meta) or any({"petal_count", "petal_shape"} - set(m["attributes"]) for m in ctx.meta):
        raise MetricSkipped("silhouette reads petals: the samples carry no petal_count and petal_shape "
                            "(synthetic flowers do)")
    if ctx.generate is None:
        raise MetricSkipped("silhouette needs the generator, to draw from captions that name the form")
    gen = torch.Generator().manual_seed(ctx.seed)
    real = read(ctx.real)
    named = {"count": torch.tensor([m["attributes"]["petal_count"] for m in ctx.meta]),
             "shape": torch.tensor([m["attributes"]["petal_shape"] == "pointed" for m in ctx.meta])}
    out: dict[str, float] = {}
    regularity = []
    for key, attr, reading in (("count", "petal_count", "count"), ("shape", "petal_shape", "pointed")):
        pairs = pick_naming(ctx.meta, (attr,), gen)
        if not pairs:
            continue
        idx, cap = (torch.tensor(v) for v in zip(*pairs))
        z = torch.randn(len(idx), ctx.z_dim, generator=gen)
        fake = read(ctx.generate(z, ctx.all_emb[idx, cap]))
        want = named[key][idx]
        out[f"silhouette/{key}/fake"] = (fake[reading] == want).float().mean().item()
        out[f"silhouette/{key}/real"] = (real[reading][idx] == want).float().mean().item()
        out[f"silhouette/{key}/chance"] = torch.unique(want, return_counts=True)[1].max().item() / len(want)
        out[f"silhouette/{key}/pairs"] = len(idx)
        regularity.append(fake["regularity"])
    if not regularity:
        raise MetricSkipped("no test caption names the petal count or shape")
    fake_regularity = torch.cat(regularity)
    out["silhouette/regularity/real"] = real["regularity"].mean().item()
    out["silhouette/regularity/fake"] = fake_regularity.mean().item()
    out["silhouette/petalled/real"] = (real["regularity"] >= PETALLED).float().mean().item()
    out["silhouette/petalled/fake"] = (fake_regularity >= PETALLED).float().mean().item()
    return out
