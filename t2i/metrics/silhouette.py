"""Silhouette: does a generated flower have separate petals, as many and as shaped as its caption
says? Read off its outline by geometry, with no learned weights.

Every other form reading (the evaluator's count and shape heads, ``d_check``, ``g_check``) is a
network trained with the same augmentation as G's critics, and G can learn marks that such
networks read as "eight petals" without drawing any (docs/experiments.md, the classifier critic
and the grounding of 45 epochs). This one cannot be pleased that way: it sees only the outline.

Per image (synthetic flowers, drawn by ``t2i.data.synth``):

1. **The flower**: pixels whose colour is far (``FOREGROUND``) from the background, which is
   estimated per row from the two border columns on each side (the drawn background is a
   vertical gradient, and no flower reaches the border); a 3x3 opening, the largest piece, its
   holes filled.
2. **Its outline**: the radius of that mask along ``ANGLES`` rays from its centroid (the last
   point inside), ``r(theta)``.
3. **The readings**, from the outline's Fourier spectrum (its mean removed):
   - *count*: the harmonic among ``synth.PETAL_COUNTS`` with the most power: k petals make k lobes;
   - *regularity*: the share of the outline's power (harmonics 2 and up) in that harmonic and its
     multiples. k separate petals give a k-fold outline (the real flowers of the default's
     splits: 0.79-0.99, mean 0.96); a blob's is spread over every harmonic (the mean over a
     run's images, for every GAN run of docs/experiments.md: 0.26-0.40);
   - *shape*: the share of angles where the outline is past half-way between its narrowest and
     widest (``DUTY``): round petals fill most of the turn, pointed ones a narrow spike each
     (real: round 0.42-0.75, pointed 0.28-0.52, overlapping only at seven and eight petals).

Metrics (``real`` on the test images, ``fake`` on one image per pair, drawn with seeded noise):

- ``silhouette/petalled/{real,fake}``: the share of images with regularity >= ``PETALLED``
  (a k-fold outline: separate petals). 0 = every image a blob.
- ``silhouette/regularity/{real,fake}``: its mean.
- ``silhouette/count/{real,fake}`` on the pairs whose caption names the count,
  ``silhouette/shape/{real,fake}`` on those naming the shape: the share read as named;
  ``.../chance``: the most common named value's share (a constant guess).

On the default's real images (test / train split): count 1.0 / 1.0, shape 0.991 / 0.995,
petalled 1.0 / 0.9996. Skipped for datasets whose samples do not carry a petal count and shape
(only synthetic flowers do). The train stage logs the same readings after every epoch
(``t2i.probes.outline_check``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from t2i.data import synth
from t2i.metrics import EvalContext, MetricSkipped, register
from t2i.named import knows_named
from t2i.probes import pick_naming

FOREGROUND = 0.2  # RGB distance (images in [0, 1]) from the background that makes a pixel the flower's
ANGLES = 96       # rays of the outline
RADII = 64        # samples along each ray, out to half the image
PETALLED = 0.8    # regularity from which an outline is k-fold: one real flower in 3000 is below it
DUTY = 0.485      # below: pointed petals (reads 99% of the real flowers' shapes right)


def flower_mask(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1] -> (N, S, S) float: 1 on the flower (step 1 above)."""
    border = torch.cat([images[..., :2], images[..., -2:]], -1)  # (N, 3, S, 4)
    background = border.median(-1).values[..., None]  # (N, 3, S, 1): per row
    far = ((images - background).norm(dim=1) > FOREGROUND).numpy()  # (N, S, S)
    out = np.zeros_like(far)
    for i, m in enumerate(far):
        m = ndimage.binary_opening(m)
        pieces, n = ndimage.label(m)
        if n:
            sizes = ndimage.sum(m, pieces, range(1, n + 1))
            out[i] = ndimage.binary_fill_holes(pieces == 1 + int(np.argmax(sizes)))
    return torch.from_numpy(out).float()


def outline(mask: torch.Tensor) -> torch.Tensor:
    """(N, S, S) mask -> (N, ANGLES) radius in pixels along each ray from the mask's centroid."""
    n, size, _ = mask.shape
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    area = mask.sum((1, 2)).clamp_min(1)
    cy, cx = (mask * ys).sum((1, 2)) / area, (mask * xs).sum((1, 2)) / area  # (N,)
    theta = torch.arange(ANGLES) * 2 * math.pi / ANGLES
    r = torch.linspace(0, size / 2, RADII)
    px = cx[:, None, None] + r * torch.cos(theta)[:, None]  # (N, ANGLES, RADII)
    py = cy[:, None, None] + r * torch.sin(theta)[:, None]
    grid = torch.stack([px, py], -1) / (size - 1) * 2 - 1  # (N, ANGLES, RADII, 2) in [-1, 1]
    inside = F.grid_sample(mask[:, None], grid, align_corners=True)[:, 0] > 0.5  # (N, ANGLES, RADII)
    last = (inside * torch.arange(1, RADII + 1)).amax(-1)  # (N, ANGLES): 0 where a ray misses it
    return last.float() / RADII * (size / 2)


def read(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, 3, S, S) in [-1, 1] -> {"count": (N,) long, "regularity": (N,), "pointed": (N,) bool}."""
    radius = outline(flower_mask(((images.float() + 1) / 2).clamp(0, 1)))  # (N, ANGLES)
    power = torch.fft.rfft(radius - radius.mean(1, keepdim=True), dim=1).abs() ** 2  # (N, ANGLES // 2 + 1)
    lo, hi = min(synth.PETAL_COUNTS), max(synth.PETAL_COUNTS)
    count = power[:, lo: hi + 1].argmax(1) + lo  # (N,)
    harmonic = torch.arange(power.shape[1])
    on = (harmonic % count[:, None] == 0) & (harmonic > 0)  # (N, H): count and its multiples
    regularity = (power * on).sum(1) / power[:, 2:].sum(1).clamp_min(1e-12)
    narrow, wide = radius.amin(1, keepdim=True), radius.amax(1, keepdim=True)
    duty = (radius > (narrow + wide) / 2).float().mean(1)
    return {"count": count, "regularity": regularity, "pointed": duty < DUTY}


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
