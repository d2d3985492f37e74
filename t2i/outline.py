"""A synthetic flower's outline, read by geometry with no learned weights: how many petals, how
separate, how pointed. The ``silhouette`` metric (t2i/metrics/silhouette.py) reads generated and
real test images with it, and the train stage reads what G draws after every epoch
(``outline_check``); docs/evaluation.md, "Form by geometry: the silhouette".

Per image (drawn by ``t2i.data.synth``):

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

On the default's real images (test / train split): count 1.0 / 1.0, shape 0.991 / 0.995,
petalled (regularity >= ``PETALLED``) 1.0 / 0.9996.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from t2i.data import synth
from t2i.modes import evaluating

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


@torch.no_grad()
def outline_check(G: torch.nn.Module, probes: dict, z: torch.Tensor, batch_size: int = 64,
                  device: str = "cpu") -> dict[str, float]:
    """What G draws, by the outline: images from the ``g_check``
    captions of colour pairs seen in training, with the fixed noise ``z`` (one row per caption),
    read for {count, shape} (the share drawn as named), regularity and petalled (the share with
    a k-fold outline). G runs in eval mode and is left in the mode it was in; no random draws."""
    rows = probes["g_check"]["seen"]
    emb = rows["emb"].float()
    with evaluating(G):
        fake = torch.cat([G(z[lo: lo + batch_size].to(device), emb[lo: lo + batch_size].to(device)).float().cpu()
                          for lo in range(0, len(emb), batch_size)])
    got = read(fake)
    count = torch.tensor([a["petal_count"] for a in rows["attributes"]])
    pointed = torch.tensor([a["petal_shape"] == "pointed" for a in rows["attributes"]])
    return {"count": (got["count"] == count).float().mean().item(),
            "shape": (got["pointed"] == pointed).float().mean().item(),
            "regularity": got["regularity"].mean().item(),
            "petalled": (got["regularity"] >= PETALLED).float().mean().item()}
