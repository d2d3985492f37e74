"""Attribute accuracy: does the evaluator see, in a fake image, what its caption asked for?

For each attribute head of the evaluator: accuracy on fake images against the attributes of the
test image whose caption generated them, the same on the real test images (the ceiling: how well
the evaluator itself reads unseen combinations), and two baselines: ``chance`` = the frequency of
the most common test value (what a constant guess would score at best) and ``chance_uniform`` =
1 / vocabulary size. Samples whose value the evaluator never saw in training are left out.
"""

from __future__ import annotations

import torch

from t2i.evaluator import attribute_labels
from t2i.metrics import EvalContext, MetricSkipped, register


@register("attribute_accuracy")
def attribute_accuracy(ctx: EvalContext) -> dict[str, float]:
    if not ctx.evaluator.attributes:
        raise MetricSkipped("the dataset has neither attribute nor class labels")
    labels = attribute_labels(ctx.meta, ctx.evaluator.attributes)  # {attr: (N,)}, -1 = unknown
    fake, real = ctx.outputs("fake")["logits"], ctx.outputs("real")["logits"]
    out: dict[str, float] = {}
    fakes, reals = [], []
    for attr, y in labels.items():
        known = y >= 0
        if not known.any():  # e.g. a class head on a class-disjoint test split
            continue
        y = y[known]
        acc_fake = (fake[attr][known].argmax(1) == y).float().mean().item()
        acc_real = (real[attr][known].argmax(1) == y).float().mean().item()
        out[f"attr/{attr}/fake"] = acc_fake
        out[f"attr/{attr}/real"] = acc_real
        out[f"attr/{attr}/chance"] = torch.bincount(y).max().item() / len(y)
        out[f"attr/{attr}/chance_uniform"] = 1.0 / len(ctx.evaluator.attributes[attr])
        fakes.append(acc_fake)
        reals.append(acc_real)
    if not fakes:
        raise MetricSkipped(f"no test image has a value of {', '.join(labels)} seen in training "
                            "(class labels on a class-disjoint split)")
    out["attr/mean/fake"] = sum(fakes) / len(fakes)
    out["attr/mean/real"] = sum(reals) / len(reals)
    return out
