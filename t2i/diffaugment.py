"""Differentiable augmentation of every image D sees (DiffAugment, Zhao et al. 2020; not
t2i.augment, the label-keeping augmentation of the evaluator and the grounding): the same
random colour, translation, cutout and quarter turn for real and fake images, so that D cannot
tell them apart by the augmentation, while G's gradient flows back through it.
``train.augment`` names the transforms ("" = off; e.g. "translation,cutout,turn").

The draws are taken on the CPU from the step's generator (``draws``, called by
``t2i.gan.step_inputs``) and carried in ``StepInputs.d_draws``; ``apply`` is a pure function of
the images and the draws, one per image index, so the i-th real image and the i-th fake go through
the same transform. Written from the paper's description, not from its code.

"turn" (a quarter turn and a mirror flip per image) keeps a count and a shape, so D must learn
petal count as a count rather than memorise the few thousand images it has (D's trunk trained on
the count alone, supervised, for the default's 1125 steps reads 0.29 of test images without
augmentation and 0.60 with translation and turns: scripts/probe_d.py, docs/experiments.md; in the
GAN it did not move the count). It assumes the images have no
upright: right for flowers seen from above, wrong for birds, whose samples would come out on their
sides (leaking, Karras et al. 2020): leave it out for CUB.

A risk to measure, not assume away: "color" scales saturation by [0, 2), so some real images
reach D nearly grey while their captions name colours; translation and cutout keep every colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2i.params import AUGMENTATIONS

TRANSLATION = 1 / 8  # the largest shift, as a share of the image side
CUTOUT = 1 / 2  # the side of the square cut out, as a share of the image side


def draws(names: str, B: int, size: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
    """The random draws of ``train.augment`` = ``names`` (checked by t2i.params) for B images of
    side ``size``, in the fixed order of ``AUGMENTATIONS``."""
    out = {}
    for n in (a for a in AUGMENTATIONS if a in names.split(",")):
        if n == "color":
            out["brightness"] = torch.rand(B, generator=rng) - 0.5  # (B,) added, in [-0.5, 0.5)
            out["saturation"] = torch.rand(B, generator=rng) * 2  # (B,) chroma scaled by [0, 2)
            out["contrast"] = torch.rand(B, generator=rng) + 0.5  # (B,) scaled by [0.5, 1.5)
        elif n == "translation":
            m = int(size * TRANSLATION + 0.5)
            out["shift"] = torch.randint(-m, m + 1, (B, 2), generator=rng)  # (B, 2) pixels down, right
        elif n == "cutout":
            c = int(size * CUTOUT + 0.5)
            out["cut"] = torch.randint(0, size + (1 - c % 2), (B, 2), generator=rng)  # (B, 2) the square's centre
        elif n == "turn":
            out["turns"] = torch.randint(0, 4, (B,), generator=rng)  # (B,) quarter turns, anticlockwise
            out["mirror"] = torch.rand(B, generator=rng) < 0.5  # (B,) then flipped left-right
    return out


def apply(images: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 3, S, S) images -> the same, through the transforms whose draws ``d`` holds."""
    x = images
    if "brightness" in d:
        per = lambda v: v.to(x.device, x.dtype)[:, None, None, None]  # noqa: E731  (B, 1, 1, 1)
        x = x + per(d["brightness"])
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, S, S) grey level
        x = (x - mean) * per(d["saturation"]) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        x = (x - mean) * per(d["contrast"]) + mean
    if "shift" in d:
        x = translate(x, d["shift"].to(x.device))
    if "cut" in d:
        x = x * cutout_mask(x, d["cut"].to(x.device))
    if "turns" in d:
        x = turn(x, d["turns"].to(x.device), d["mirror"].to(x.device))
    return x


def turn(x: torch.Tensor, turns: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """Turn image i of (B, C, S, S) ``x`` by ``turns[i]`` quarter turns, then flip it left-right
    where ``mirror[i]``: a permutation of its pixels, so the gradient passes unchanged."""
    per = lambda m: m[:, None, None, None]  # noqa: E731  (B,) -> (B, 1, 1, 1)
    out = x
    for k in (1, 2, 3):
        out = torch.where(per(turns == k), x.rot90(k, (2, 3)), out)
    return torch.where(per(mirror), out.flip(-1), out)


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each image by ``shift`` (B, 2) pixels (rows, columns), filling with zeros (mid grey)."""
    B, C, S, _ = x.shape
    m = int(shift.abs().max()) if shift.numel() else 0
    padded = F.pad(x, (m, m, m, m))  # (B, C, S + 2m, S + 2m)
    idx = torch.arange(S, device=x.device)
    rows = (idx[None, :] - shift[:, :1] + m)  # (B, S) source row of each output row
    cols = (idx[None, :] - shift[:, 1:] + m)  # (B, S)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, S, S, C)
    return out.permute(0, 3, 1, 2)


def cutout_mask(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S): 0 inside a square of side c = CUTOUT * S from ``centre`` (B, 2) - c // 2
    (clipped at the border), 1 elsewhere."""
    S = x.size(-1)
    c = int(S * CUTOUT + 0.5)
    idx = torch.arange(S, device=x.device)
    inside_r = ((idx[None, :] - centre[:, :1] + c // 2) >= 0) & ((idx[None, :] - centre[:, :1] + c // 2) < c)  # (B, S)
    inside_c = ((idx[None, :] - centre[:, 1:] + c // 2) >= 0) & ((idx[None, :] - centre[:, 1:] + c // 2) < c)
    return (~(inside_r[:, :, None] & inside_c[:, None, :]))[:, None].to(x.dtype)
