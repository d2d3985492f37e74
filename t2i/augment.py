"""Augmentation of training images that keeps what a caption says true (the evaluator's and the
grounding's; they share this and nothing else)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift_turn_flip(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (edges replicated), quarter turn and
    horizontal flip.

    None changes a colour, a count or a shape, so the labels stay true.
    """
    B, _, S, _ = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")  # (B, 3, S + 2m, S + 2m)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, B), generator=gen).tolist()
    turns = torch.randint(0, 4, (B,), generator=gen).tolist()
    flip = torch.rand(B, generator=gen) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + S, dx[i]:dx[i] + S].rot90(turns[i], (1, 2)) for i in range(B)])
    return torch.where(flip[:, None, None, None], out.flip(-1), out)  # (B, 3, S, S)
