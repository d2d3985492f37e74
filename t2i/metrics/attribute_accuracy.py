"""Attribute accuracy: does the evaluator see, in a fake image, what its caption asked for?

Where the samples say which attributes each caption names (``meta["named"]``, synthetic
flowers), an attribute is scored only on captions that name it: per test image and attribute, a
seeded pick among the image's captions that name the attribute, one fake drawn from it (seeded
noise, the same for every model), read by the evaluator's head for that attribute.
``attr/<attr>/pairs`` counts these (test image, caption) pairs. Elsewhere (free-text captions of
CUB, Oxford-102, folders, Hugging Face) every caption is scored, the fake of the test image's
one random caption against all the test image's attributes; ``attr/captions`` says which:
``named`` or ``any``.

Per attribute: accuracy on the fakes, the same on the real test images of those pairs (the
ceiling: how well the evaluator itself reads unseen combinations), and two baselines over the
same pairs: ``chance`` = the frequency of the most common value (a constant guess at best) and
``chance_uniform`` = 1 / vocabulary size. Samples whose value the evaluator never saw in
training are left out.
"""

from __future__ import annotations

import torch

from t2i.named import attribute_labels
from t2i.metrics import EvalContext, MetricSkipped, register
from t2i.named import knows_named
from t2i.probes import pick_naming


@register("attribute_accuracy")
def attribute_accuracy(ctx: EvalContext) -> dict[str, float]:
    if not ctx.evaluator.attributes:
        raise MetricSkipped("the dataset has neither attribute nor class labels")
    labels = attribute_labels(ctx.meta, ctx.evaluator.attributes)  # {attr: (N,)}, -1 = unknown
    real = ctx.outputs("real")["logits"]
    named = knows_named(ctx.meta) and ctx.generate is not None
    gen = torch.Generator().manual_seed(ctx.seed)
    out: dict = {"attr/captions": "named" if named else "any"}
    fakes, reals = [], []
    for attr, y in labels.items():
        if named:  # the pairs whose caption names attr: a fake of its own for each
            pairs = [(i, c) for i, c in pick_naming(ctx.meta, (attr,), gen) if y[i] >= 0]
            if not pairs:
                continue
            idx, cap = (torch.tensor(v) for v in zip(*pairs))
            z = torch.randn(len(idx), ctx.z_dim, generator=gen)
            fake = ctx.score(ctx.generate(z, ctx.all_emb[idx, cap]))["logits"][attr]  # (pairs, K)
        else:  # every image's one random caption, whatever it names
            idx = (y >= 0).nonzero().flatten()
            if not len(idx):  # e.g. a class head on a class-disjoint test split
                continue
            fake = ctx.outputs("fake")["logits"][attr][idx]
        yi = y[idx]
        acc_fake = (fake.argmax(1) == yi).float().mean().item()
        acc_real = (real[attr][idx].argmax(1) == yi).float().mean().item()
        out[f"attr/{attr}/fake"] = acc_fake
        out[f"attr/{attr}/real"] = acc_real
        out[f"attr/{attr}/pairs"] = len(idx)
        out[f"attr/{attr}/chance"] = torch.bincount(yi).max().item() / len(yi)
        out[f"attr/{attr}/chance_uniform"] = 1.0 / len(ctx.evaluator.attributes[attr])
        fakes.append(acc_fake)
        reals.append(acc_real)
    if not fakes:
        raise MetricSkipped(f"no test image has a value of {', '.join(labels)} seen in training "
                            "(class labels on a class-disjoint split)")
    out["attr/mean/fake"] = sum(fakes) / len(fakes)
    out["attr/mean/real"] = sum(reals) / len(reals)
    return out
