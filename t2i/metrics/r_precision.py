"""R-precision (AttnGAN, Xu et al. 2018) with the evaluator as the image-text scorer.

For each image: its own caption embedding against up to 99 mismatched captions, drawn (seeded)
from test images of other classes. Where the samples say which attributes each caption names, a
mismatched caption must also contradict the image's caption on an attribute both name: "a
flower with five red petals" of a (red, yellow) flower is no mismatch for an image drawn from
"a red flower with a black centre", which it describes just as well. The score is the cosine between the evaluator's image
projection and the L2-normalised caption embedding; an image counts as a hit when its own
caption scores highest (R = 1: one true caption). Reported for fake and real images, which see
the same candidates, and two baselines:

- ``chance`` = 1 / (number of candidates): a scorer that ranks the candidates at random.
- ``shuffled_real``: each image's candidates scored against a random *other* real test image.
  Since no negative shares the true caption's class, any image of the right class tends to
  win, so a generator that ignores the text but draws realistic flowers of one frequent class,
  or at random, lands near this (about the chance that two test images share a class), not
  near ``chance``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2i.metrics import EvalContext, MetricSkipped, register
from t2i.named import knows_named

MISMATCHED = 99


def contradicting(meta: list[dict], pick: torch.Tensor) -> torch.Tensor:
    """(N, N, C) bool: caption c of image j names an attribute that caption ``pick[i]`` of image
    i names too, with another value."""
    attrs = sorted({a for m in meta for named in m["named"] for a in named})
    C = max(len(m["named"]) for m in meta)
    names = torch.zeros(len(meta), C, len(attrs), dtype=torch.bool)  # (N, C, A): caption c names a
    for j, m in enumerate(meta):
        for c, named in enumerate(m["named"]):
            names[j, c, [attrs.index(a) for a in named]] = True
    codes: dict[str, dict[str, int]] = {a: {} for a in attrs}
    value = torch.tensor([[codes[a].setdefault(str(m["attributes"].get(a)), len(codes[a])) for a in attrs]
                          for m in meta])  # (N, A)
    own = names[torch.arange(len(meta)), pick]  # (N, A): what each image's caption names
    differs = value[:, None, :] != value[None, :, :]  # (N, N, A)
    return (own[:, None, None, :] & names[None] & differs[:, :, None, :]).any(-1)  # (N, N, C)


def candidates(ctx: EvalContext) -> torch.Tensor:
    """(N, 1 + M, D) caption embeddings per image: its own first, then M <= 99 mismatched."""
    N, C, _ = ctx.all_emb.shape
    keys = ctx.class_keys()  # images without a class id count as a class of their own
    ids = {k: n for n, k in enumerate(dict.fromkeys(keys))}
    cls = torch.tensor([ids[k] for k in keys])  # (N,)
    gen = torch.Generator().manual_seed(ctx.seed)
    other = cls[:, None] != cls[None, :]  # (N, N)
    ok = other[:, :, None] & contradicting(ctx.meta, ctx.pick) if knows_named(ctx.meta) else None  # (N, N, C)
    n_ok = ok.flatten(1).sum(1) if ok is not None else other.sum(1)  # (N,) mismatched captions (images) to draw from
    if n_ok.min() == 0:
        raise MetricSkipped("r_precision needs test images of at least two classes")
    m = min(MISMATCHED, int(n_ok.min()))
    rows = []
    for i in range(N):
        if ok is not None:  # any allowed caption of another class
            j, c = ok[i].nonzero().unbind(1)  # (n_ok,) each
            take = torch.randperm(len(j), generator=gen)[:m]  # (m,)
            j, c = j[take], c[take]
        else:  # m other images, one of their captions each
            others = other[i].nonzero().flatten()
            j = others[torch.randperm(len(others), generator=gen)[:m]]  # (m,)
            c = torch.randint(0, C, (m,), generator=gen)
        rows.append(torch.cat([ctx.emb[i][None], ctx.all_emb[j, c]]))  # (1 + m, D)
    return torch.stack(rows)  # (N, 1 + M, D)


def hits(proj: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the true caption (index 0) scores strictly above every mismatched one."""
    scores = torch.einsum("nd,nmd->nm", F.normalize(proj, dim=-1), F.normalize(cands, dim=-1))
    return scores[:, 0] > scores[:, 1:].max(1).values


@register("r_precision")
def r_precision(ctx: EvalContext) -> dict[str, float]:
    cands = candidates(ctx).float()  # (N, 1 + m, D)
    real = ctx.outputs("real")["proj"]  # (N, emb_dim)
    N = len(real)
    other = (torch.arange(N) + torch.randint(1, N, (N,), generator=torch.Generator().manual_seed(ctx.seed))) % N
    return {
        "r_precision/fake": hits(ctx.outputs("fake")["proj"], cands).float().mean().item(),
        "r_precision/real": hits(real, cands).float().mean().item(),
        "r_precision/shuffled_real": hits(real[other], cands).float().mean().item(),
        "r_precision/chance": 1.0 / cands.shape[1],
        "r_precision/candidates": float(cands.shape[1]),
    }
