"""What D checks: per attribute, the share of real test images for which the trained
discriminator scores the true caption above the same caption with that attribute's word changed
(``t2i.probes.caption_check``; ties count half, 0.5 = D does not look at the attribute).

``d_check/<attr>``. The train stage logs the same numbers to DVCLive after every epoch. Needs
the attribute probes and the run's discriminator (from its training checkpoint).
"""

from __future__ import annotations

from t2i.metrics import EvalContext, MetricSkipped, need_probes, register
from t2i.probes import caption_check


@register("d_check")
def d_check(ctx: EvalContext) -> dict[str, float]:
    probes = need_probes(ctx)
    if ctx.discriminator is None:
        raise MetricSkipped("no discriminator: the training checkpoint is missing")
    keys = [m.get("key") for m in ctx.meta]
    shares = caption_check(ctx.discriminator, ctx.real, probes, keys, ctx.batch_size, ctx.device)
    return {f"d_check/{attr}": v for attr, v in shares.items()}
