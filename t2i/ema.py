"""An exponential moving average of G's weights (``train.ema``; stylegan2-ada's ``G_ema``): kept
beside G, updated after each of G's steps, saved in the checkpoint beside G and, in place of G,
in ``generator.pt``, so that generate, serve and evaluate use the averaged weights.

The decay is ramped (beta_t = min(ema, (1 + t) / (10 + t)) at update t), so early on the average
follows G closely instead of dragging its random start along. BatchNorm's running statistics are
copied from G, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_at(ema: float, t: int) -> float:
    """The weight of the old average at update ``t`` (1-based)."""
    return min(ema, (1 + t) / (10 + t))


class Ema(nn.Module):
    """The averaged copy of ``G`` (``module``), frozen and in eval mode, and how many updates it has
    seen (in its state dict, so that a resumed run ramps on where it stopped)."""

    def __init__(self, G: nn.Module, ema: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(G).eval().requires_grad_(False)
        self.ema, self.updates = ema, 0

    def train(self, mode: bool = True) -> "Ema":
        return self  # the average is only ever read in eval mode

    @torch.no_grad()
    def update(self, G: nn.Module) -> None:
        """average <- beta * average + (1 - beta) * G, for every parameter; buffers copied."""
        self.updates += 1
        beta = decay_at(self.ema, self.updates)
        torch._foreach_lerp_(list(self.module.parameters()), list(G.parameters()), 1.0 - beta)
        for mine, theirs in zip(self.module.buffers(), G.buffers()):
            mine.copy_(theirs)

    def get_extra_state(self) -> dict:
        return {"updates": self.updates}

    def set_extra_state(self, state: dict) -> None:
        self.updates = state["updates"]
