"""What G draws: attribute accuracy of images drawn from captions that name all four attributes
(``t2i.probes``), on colour pairs seen in training and on the test split's unseen pairs.

``g_check/seen/<attr>`` and ``g_check/unseen/<attr>``, each over ``probes.G_CHECK_CAPTIONS``
captions (every pair in turn, petal count and shape at random). Low on both: G never learned the
attribute; high on seen pairs only: G learned it but cannot compose it with new colours. Chance
is ``attr/<attr>/chance_uniform``. Skipped for sources whose captions' attributes are unknown.
"""

from __future__ import annotations

import torch

from t2i.named import attribute_labels
from t2i.metrics import EvalContext, MetricSkipped, need_probes, register


@register("g_check")
def g_check(ctx: EvalContext) -> dict[str, float]:
    probes = need_probes(ctx)
    if ctx.generate is None:
        raise MetricSkipped("g_check needs the generator")
    gen = torch.Generator().manual_seed(ctx.seed)
    out: dict[str, float] = {}
    for name, rows in probes["g_check"].items():
        z = torch.randn(len(rows["captions"]), ctx.z_dim, generator=gen)
        logits = ctx.score(ctx.generate(z, rows["emb"].float()))["logits"]
        labels = attribute_labels([{"attributes": a} for a in rows["attributes"]], ctx.evaluator.attributes)
        for attr, y in labels.items():
            known = y >= 0
            if known.any():
                out[f"g_check/{name}/{attr}"] = (logits[attr][known].argmax(1) == y[known]).float().mean().item()
        out[f"g_check/{name}/images"] = len(z)
    return out
