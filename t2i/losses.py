"""GAN-CLS / GAN-INT losses (Reed et al. 2016) and DF-GAN's hinge loss with MA-GP (Tao et al.
2022). Every function takes raw logits (scores, for the hinge)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean BCE-with-logits against a constant target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(
    d_real: torch.Tensor, d_wrong: torch.Tensor | None, d_fake: torch.Tensor, smooth: float = 0.0
) -> torch.Tensor:
    """Matching-aware D loss: real image + right text -> 1; wrong text or fake image -> 0.

    smooth: one-sided label smoothing, the real target becomes 1 - smooth.
    d_wrong None: the plain conditional GAN loss (no mismatched-text term, fake weighted 1).
    """
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth!r}")
    if d_wrong is None:
        return _bce(d_real, 1.0 - smooth) + _bce(d_fake, 0.0)
    return _bce(d_real, 1.0 - smooth) + 0.5 * (_bce(d_wrong, 0.0) + _bce(d_fake, 0.0))


def generator_adv_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: push D(G(z, e), e) towards 1."""
    return _bce(d_fake, 1.0)


def interpolate_embeddings(e1: torch.Tensor, e2: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """beta * e1 + (1 - beta) * e2: text embeddings that have no real image (GAN-INT)."""
    if e1.shape != e2.shape:
        raise ValueError(f"embedding shapes differ: {tuple(e1.shape)} vs {tuple(e2.shape)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    return beta * e1 + (1.0 - beta) * e2


def gan_int_loss(d_int: torch.Tensor) -> torch.Tensor:
    """GAN-INT term: push D(G(z, e_int), e_int) towards 1."""
    return _bce(d_int, 1.0)


def l1_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Pixel-wise mean absolute error."""
    return F.l1_loss(fake, real)


def feature_matching_loss(feat_real: torch.Tensor, feat_fake: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between batch-mean D features; no gradient into real."""
    if feat_real.shape[1:] != feat_fake.shape[1:]:
        raise ValueError(
            f"feature shapes differ: {tuple(feat_real.shape)} vs {tuple(feat_fake.shape)}"
        )
    diff = feat_real.detach().mean(dim=0) - feat_fake.mean(dim=0)
    return diff.pow(2).mean()


def mode_seeking_loss(fake1: torch.Tensor, fake2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """MSGAN (Mao et al. 2019): 1 / (|G(z1, c) - G(z2, c)| / |z1 - z2|), mean absolute
    differences; small when two noises give images as far apart as the noises are."""
    ratio = (fake1 - fake2).abs().mean() / (z1 - z2).abs().mean()
    return 1.0 / (ratio + eps)


def generator_loss(
    d_fake: torch.Tensor,
    *,
    d_int: torch.Tensor | None = None,
    fake: torch.Tensor | None = None,
    real: torch.Tensor | None = None,
    feat_real: torch.Tensor | None = None,
    feat_fake: torch.Tensor | None = None,
    kl: torch.Tensor | None = None,
    ms: torch.Tensor | None = None,
    int_coef: float = 0.0,
    l1_coef: float = 0.0,
    fm_coef: float = 0.0,
    kl_coef: float = 0.0,
    ms_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """adv + int_coef * gan_int + l1_coef * l1 + fm_coef * fm + kl_coef * kl + ms_coef * ms;
    a term is used only if its coef > 0 (``kl``: conditioning augmentation's KL divergence,
    ``ms``: ``mode_seeking_loss``, both computed by the caller).

    Returns (total, parts) where parts holds the unweighted terms that were used.
    """
    inputs = {"d_int": d_int, "fake": fake, "real": real, "feat_real": feat_real,
              "feat_fake": feat_fake, "kl": kl, "ms": ms}

    def need(coef_name: str, coef: float, *names: str) -> bool:
        if coef < 0:
            raise ValueError(f"{coef_name} must be >= 0, got {coef!r}")
        if coef == 0:
            return False
        for name in names:
            if inputs[name] is None:
                raise ValueError(f"{coef_name}={coef} > 0 but {name} is None")
        return True

    parts = {"adv": generator_adv_loss(d_fake)}
    total = parts["adv"]
    if need("int_coef", int_coef, "d_int"):
        parts["int"] = gan_int_loss(d_int)
        total = total + int_coef * parts["int"]
    if need("l1_coef", l1_coef, "fake", "real"):
        parts["l1"] = l1_loss(fake, real)
        total = total + l1_coef * parts["l1"]
    if need("fm_coef", fm_coef, "feat_real", "feat_fake"):
        parts["fm"] = feature_matching_loss(feat_real, feat_fake)
        total = total + fm_coef * parts["fm"]
    if need("kl_coef", kl_coef, "kl"):
        parts["kl"] = kl
        total = total + kl_coef * kl
    if need("ms_coef", ms_coef, "ms"):
        parts["ms"] = ms
        total = total + ms_coef * ms
    return total, parts


def hinge_discriminator_loss(d_real: torch.Tensor, d_wrong: torch.Tensor | None, d_fake: torch.Tensor) -> torch.Tensor:
    """DF-GAN's D loss without its penalty: relu(1 - real/matching) + (relu(1 + fake) +
    relu(1 + mismatched)) / 2, each a batch mean; without ``d_wrong``, real + fake."""
    real, fake = F.relu(1.0 - d_real).mean(), F.relu(1.0 + d_fake).mean()
    return real + fake if d_wrong is None else real + 0.5 * (fake + F.relu(1.0 + d_wrong).mean())


def hinge_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """DF-GAN's G loss: -D(G(z, e), e), a batch mean."""
    return -d_fake.mean()


def ma_gp(d_out: torch.Tensor, img: torch.Tensor, emb: torch.Tensor, power: float = 6.0) -> torch.Tensor:
    """Matching-aware gradient penalty (DF-GAN): mean over the batch of ||(dD/d img, dD/d emb)||^power,
    for ``d_out`` = D(img, emb) on real images with their own captions. ``img`` and ``emb`` must
    require grad; the graph is kept, so the penalty's own gradient reaches D (and whatever made
    ``emb``). An input D ignores contributes a zero gradient."""
    grads = torch.autograd.grad(d_out.sum(), (img, emb), create_graph=True, allow_unused=True)
    flat = [torch.zeros_like(x).flatten(1) if g is None else g.flatten(1) for g, x in zip(grads, (img, emb))]
    return torch.cat(flat, dim=1).norm(dim=1).pow(power).mean()


def r1_penalty(d_out: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over the batch of ||dD/d img||^2 for ``d_out`` = D's
    scores of real images ``img`` (which must require grad); the graph is kept, so the penalty's
    own gradient reaches D."""
    (grad,) = torch.autograd.grad(d_out.float().sum(), img, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(dim=1).mean()


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float,
                     fits: torch.Tensor | None = None, symmetric: bool = True,
                     extra: torch.Tensor | None = None, extra_fits: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE between matching rows of L2-normalised (B, D) ``a`` (images) and ``b`` (texts):
    row i of ``a`` against every row of ``b``, the i-th the positive, logits ``scale * a @ b.T``
    (CLIP's; DAMSM's sentence term, its scale 1 / temperature). ``fits`` (B, B) bool
    (``t2i.named.fits``): pairs off the diagonal that describe each other just as well, left out
    of the negatives. ``symmetric``: the mean with the same loss of ``b`` against ``a``.
    ``extra`` (N, D): more texts, negatives of every row of ``a`` (``ground.near_miss``), but
    those ``extra_fits`` (B, N) bool marks as describing it; ``b`` against ``a`` is unchanged."""
    logits = scale * a.float() @ b.float().t()  # (B, B)
    if fits is not None:
        off = fits.to(logits.device) & ~torch.eye(len(a), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(off, float("-inf"))
    target = torch.arange(len(a), device=a.device)
    wide = logits
    if extra is not None:
        more = scale * a.float() @ extra.float().t()  # (B, N)
        if extra_fits is not None:
            more = more.masked_fill(extra_fits.to(more.device), float("-inf"))
        wide = torch.cat([logits, more], dim=1)  # (B, B + N)
    loss = F.cross_entropy(wide, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.t(), target)) / 2
    return loss


def ranking_loss(scores: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of column 0 of (B, 1 + K) ``scores`` (an image with its own caption) against
    the other K (with captions that do not describe it), ``valid`` (B, K) bool leaving out the
    padding of rows with fewer than K such captions: XMC-GAN's image-text contrastive term for D,
    taken on D's own matching scores."""
    scores = scores.float()
    if valid is not None:
        keep = torch.cat([valid.new_ones(len(valid), 1), valid.to(scores.device)], dim=1)  # (B, 1 + K)
        scores = scores.masked_fill(~keep, float("-inf"))
    return F.cross_entropy(scores, scores.new_zeros(len(scores), dtype=torch.long))
