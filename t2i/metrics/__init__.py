"""Evaluation metrics, one module each, registered by name.

A metric is ``fn(ctx: EvalContext) -> dict[str, float]``. It may raise ``MetricSkipped(reason)``
when it cannot run here (a missing optional package, no weights offline); the evaluate loop
records the reason instead of a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from t2i import T2IError

Metric = Callable[["EvalContext"], dict[str, float]]
METRICS: dict[str, Metric] = {}


class MetricSkipped(Exception):
    """Raised by a metric that cannot run in this environment; the message says why."""


def need_probes(ctx: "EvalContext") -> dict:
    """The attribute probes (``t2i.probes``) of a metric that reads them; MetricSkipped without."""
    if ctx.probes is None:
        raise MetricSkipped("no attribute probes: the source does not say which attributes its captions name")
    return ctx.probes


def register(name: str) -> Callable[[Metric], Metric]:
    def deco(fn: Metric) -> Metric:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = fn
        return fn
    return deco


def get(names: list[str]) -> list[Metric]:
    """The metrics called ``names``, in order; every name is checked before any is returned."""
    for name in names:
        if name not in METRICS:
            raise T2IError(f"unknown metric {name!r} (known: {', '.join(sorted(METRICS))})")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise T2IError(f"metric {dup!r} is listed twice")
    return [METRICS[name] for name in names]


def class_keys(meta: list[dict]) -> list:
    """Per test image, its class: the class id, or the image itself when it has none."""
    return [("class", m["class_id"]) if "class_id" in m else ("image", i) for i, m in enumerate(meta)]


@dataclass
class EvalContext:
    """Everything a metric may look at. Images are float in [-1, 1], fake[i] drawn from emb[i]."""

    evaluator: torch.nn.Module
    real: torch.Tensor  # (N, 3, S, S) test images
    fake: torch.Tensor  # (N, 3, S, S) generated images
    emb: torch.Tensor  # (N, D) the caption embedding fake[i] was generated from
    all_emb: torch.Tensor  # (N, C, D) every caption embedding of test image i
    pick: torch.Tensor  # (N,) which of its captions fake[i] was drawn from: emb[i] = all_emb[i, pick[i]]
    meta: list[dict]
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 64
    inception_weights: str | None = None  # torch-fidelity InceptionV3 weights file
    online: bool = False  # may torch-fidelity download its weights?
    # More images from the generator: (z (n, z_dim), emb (n, D)) -> (n, 3, S, S) in [-1, 1].
    generate: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
    z_dim: int = 0
    # The generator's text encoder: list of captions -> (n, D) embeddings (numpy or torch).
    encode: Optional[Callable[[list[str]], object]] = None
    probes: Optional[dict] = None  # t2i.probes: captions that name known attributes, where the source has them
    discriminator: Optional[torch.nn.Module] = None  # the run's D (d_check), from its training checkpoint
    _outputs: dict = field(default_factory=dict, repr=False)

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> dict:
        """The evaluator's outputs on ``images``, in batches: {"logits": {attr: (N, K)},
        "proj": (N, emb_dim), "features": (N, feat_dim)}, on the CPU."""
        parts = [self.evaluator(x.to(self.device)) for x in images.split(self.batch_size)]
        return {
            "logits": {k: torch.cat([p["logits"][k] for p in parts]).cpu() for k in parts[0]["logits"]},
            "proj": torch.cat([p["proj"] for p in parts]).cpu(),
            "features": torch.cat([p["features"] for p in parts]).cpu(),
        }

    def outputs(self, which: str) -> dict:
        """``score`` of ``which`` ("real" or "fake"), computed once and cached."""
        if which not in self._outputs:
            self._outputs[which] = self.score({"real": self.real, "fake": self.fake}[which])
        return self._outputs[which]

    def class_keys(self) -> list:
        """Per test image, its class (see ``class_keys``)."""
        return class_keys(self.meta)


# Importing the metric modules registers them.
from t2i.metrics import (attribute_accuracy, d_check, diversity, frechet_distance, g_check,  # noqa: E402,F401
                         inception, phrasing, r_precision, silhouette)
