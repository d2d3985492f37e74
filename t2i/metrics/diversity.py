"""Diversity: does the generator vary with its noise as much as real images of a caption's class vary?

For up to ``CAPTIONS`` test captions, one per test class (seeded pick), ``SAMPLES`` images are
drawn with different noise. Their mean pairwise distance is compared with the same statistic
for ``SAMPLES`` real test images of the caption's class:

- ``diversity/generated``, ``diversity/real``: mean pairwise Euclidean distance of the
  evaluator's L2-normalised features, averaged over the captions;
- ``diversity/ratio`` = generated / real: 0 = the noise changes nothing (mode collapse),
  1 = as varied as real images of the class;
- ``diversity/pixel_*``: the same in pixel space (RMS difference per pixel), a sanity check
  that does not depend on the evaluator.

Classes with fewer than two test images are left out; a dataset without any (no class ids) is
skipped with that reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2i.metrics import EvalContext, MetricSkipped, register

CAPTIONS = 32
SAMPLES = 8


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """(k, ...) -> the mean Euclidean distance over the k (k - 1) / 2 pairs."""
    return torch.pdist(x.flatten(1).double()).mean().item()


def spread(features: torch.Tensor, images: torch.Tensor) -> tuple[float, float]:
    """(feature-space, pixel-space) mean pairwise distance of one group of images."""
    pixels = images.flatten(1) / images[0].numel() ** 0.5  # RMS per pixel
    return mean_pairwise_distance(F.normalize(features, dim=1)), mean_pairwise_distance(pixels)


@register("diversity")
def diversity(ctx: EvalContext) -> dict[str, float]:
    if ctx.generate is None:
        raise MetricSkipped("diversity needs the generator, to draw several images per caption")
    keys = ctx.class_keys()
    members: dict = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    classes = [k for k, idx in members.items() if len(idx) >= 2]
    if not classes:
        raise MetricSkipped("diversity needs test classes of at least two images (class ids in the meta)")
    gen = torch.Generator().manual_seed(ctx.seed)
    classes = [classes[j] for j in torch.randperm(len(classes), generator=gen)[:CAPTIONS].tolist()]

    fake_f, fake_p, real_f, real_p = [], [], [], []
    for k in classes:
        idx = torch.tensor(members[k])
        caption = idx[torch.randint(len(idx), (1,), generator=gen)].item()  # its generating caption
        z = torch.randn(SAMPLES, ctx.z_dim, generator=gen)  # (SAMPLES, z_dim)
        fakes = ctx.generate(z, ctx.emb[caption].expand(SAMPLES, -1))  # (SAMPLES, 3, S, S)
        reals = ctx.real[idx[torch.randperm(len(idx), generator=gen)[:SAMPLES]]]  # (<= SAMPLES, 3, S, S)
        f, p = spread(ctx.score(fakes)["features"], fakes)
        fake_f.append(f), fake_p.append(p)
        f, p = spread(ctx.score(reals)["features"], reals)
        real_f.append(f), real_p.append(p)

    def mean(v: list[float]) -> float:
        return sum(v) / len(v)

    out = {"diversity/generated": mean(fake_f), "diversity/real": mean(real_f),
           "diversity/pixel_generated": mean(fake_p), "diversity/pixel_real": mean(real_p),
           "diversity/captions": float(len(classes)), "diversity/samples": float(SAMPLES)}
    out["diversity/ratio"] = out["diversity/generated"] / max(out["diversity/real"], 1e-12)
    out["diversity/pixel_ratio"] = out["diversity/pixel_generated"] / max(out["diversity/pixel_real"], 1e-12)
    return out
