"""Frechet distance between real and fake test images in the evaluator's feature space.

Computed by torchmetrics' ``FrechetInceptionDistance`` with the evaluator as its custom feature
extractor. This is *not* FID: the features come from our small evaluator trained on this
dataset, not from InceptionV3, so values are only comparable between runs sharing an evaluator.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from t2i.metrics import EvalContext, register


class EvaluatorFeatures(nn.Module):
    """Feature extractor for torchmetrics: (B, 3, S, S) float in [0, 1] -> (B, feat_dim).

    With ``normalize=True`` and a custom module, torchmetrics passes the images through as given
    (floats in [0, 1]) and reads the feature size from ``num_features``.
    """

    def __init__(self, evaluator: nn.Module) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.num_features = evaluator.feat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluator.features(x * 2 - 1)  # [0, 1] -> [-1, 1] -> (B, feat_dim)


@register("frechet_distance")
@torch.no_grad()
def frechet_distance(ctx: EvalContext) -> dict[str, float]:
    from torchmetrics.image.fid import FrechetInceptionDistance  # slow import: only when used

    fd = FrechetInceptionDistance(feature=EvaluatorFeatures(ctx.evaluator), normalize=True).to(ctx.device)
    for real, images in ((True, ctx.real), (False, ctx.fake)):
        for x in images.split(ctx.batch_size):
            fd.update(((x.to(ctx.device) + 1) / 2).clamp(0, 1), real=real)
    return {"fd_evaluator": fd.compute().item()}
