"""Wrong captions: one idea, one name. A caption is *wrong* for an image when it does not describe
it. A matching-aware D must score a real image with a wrong caption as fake (``train.cls``), and
D's contrastive term ranks an image's own caption above the batch's wrong ones
(``train.d_contrast_coef``).

``train.wrong`` picks how each image's wrong caption is drawn: ``class``, another class's
(``pick_wrong_class``, Reed et al.), or ``hard``, one that does not describe it and, with
probability ``train.hard_fraction``, the most similar such caption (``pick_wrong_hard``).
``wrong_mask`` is the (B, B) table of which batch captions are wrong for which image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosines(emb: torch.Tensor) -> torch.Tensor:
    """(B, B) cosine similarity of the rows of ``emb`` (B, D), in fp32, outside autograd."""
    e = F.normalize(emb.detach().float(), dim=-1)
    return e @ e.t()


def not_self(B: int) -> torch.Tensor:
    """(B, B) bool: every pair but an item with itself."""
    return ~torch.eye(B, dtype=torch.bool)


def wrong_mask(fit: torch.Tensor, emb: torch.Tensor, max_cos: float | None = None) -> torch.Tensor:
    """(B, B) bool: item j's captions are wrong for item i's image: they do not fit it (``fit``,
    ``t2i.named.fits``), j is not i, and where the source cannot say what its captions name,
    they are not within ``max_cos`` of its own (``emb`` (B, D), a paraphrase)."""
    out = ~fit & not_self(len(fit))
    if max_cos is not None:
        out &= cosines(emb) < max_cos
    return out


def pick_wrong_class(class_id: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """(B,): for each item, a random other item of another class, whose caption is its wrong one."""
    B = class_id.numel()
    other = (class_id[:, None] != class_id[None, :]).float()  # (B, B)
    lonely = other.sum(dim=1) == 0  # a batch of one class: fall back to any other item
    other[lonely] = 1.0 - torch.eye(B)[lonely] if B > 1 else 1.0
    return torch.multinomial(other, 1, generator=rng).squeeze(1)


def pick_wrong_hard(fit: torch.Tensor, emb: torch.Tensor, fraction: float, rng: torch.Generator,
                    max_cos: float | None = None) -> torch.Tensor:
    """(B,): for each item, another item whose captions are wrong for its image (``fit`` (B, B),
    ``t2i.named.fits``): with probability ``fraction`` the one whose caption embedding (``emb``
    (B, D)) is the most similar to its own, else a random one. Where the source cannot say what
    its captions name, ``max_cos`` also rules out captions this close to its own (a paraphrase
    of a true description). An item left without a candidate by that guard keeps the ones
    ``fit`` allows; one that every other item fits (rare: a batch of captions that name only
    what the images share) falls back to any other item, as a class-based pick would."""
    B = fit.size(0)
    sim = cosines(emb)  # (B, B)
    other = not_self(B) if B > 1 else torch.ones(1, 1, dtype=torch.bool)
    ok = ~fit & other
    if max_cos is not None:
        close = ok & (sim < max_cos)
        keep = close.any(dim=1)
        ok[keep] = close[keep]
    lonely = ~ok.any(dim=1)
    ok[lonely] = other[lonely]
    hard = sim.masked_fill(~ok, float("-inf")).argmax(dim=1)  # (B,)
    easy = torch.multinomial(ok.float(), 1, generator=rng).squeeze(1)  # (B,)
    take_hard = torch.rand(B, generator=rng) < fraction
    return torch.where(take_hard, hard, easy)
