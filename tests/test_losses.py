"""Hand-computed checks for the GAN-CLS / GAN-INT losses."""

import math

import pytest
import torch

from t2i.losses import (
    discriminator_loss,
    feature_matching_loss,
    gan_int_loss,
    generator_adv_loss,
    generator_loss,
    interpolate_embeddings,
    l1_loss,
    mode_seeking_loss,
)
from t2i.families.gan_cls import Discriminator, Generator, ModelConfig

LOG2 = math.log(2.0)


def bce(x: float, y: float) -> float:
    """Plain-Python BCE on one logit."""
    p = 1.0 / (1.0 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def mean_bce(xs: list[float], y: float) -> float:
    return sum(bce(x, y) for x in xs) / len(xs)


def close(t: torch.Tensor, v: float) -> None:
    assert t.item() == pytest.approx(v, rel=1e-5, abs=1e-6)


# --- adversarial terms -------------------------------------------------------


def test_zero_logits_give_log2() -> None:
    z = torch.zeros(5)
    close(generator_adv_loss(z), LOG2)
    close(gan_int_loss(z), LOG2)
    close(discriminator_loss(z, z, z), 2 * LOG2)  # log2 + 0.5 * (log2 + log2)


def test_generator_adv_known_numbers() -> None:
    # BCE(x, 1) = log(1 + e^-x): x=ln3 -> log(4/3), x=-ln3 -> log 4
    x = torch.tensor([math.log(3), -math.log(3)])
    close(generator_adv_loss(x), (math.log(4 / 3) + math.log(4)) / 2)
    close(gan_int_loss(x), (math.log(4 / 3) + math.log(4)) / 2)


def test_discriminator_loss_weights_fake_terms_by_half() -> None:
    real, wrong, fake = [1.5, -0.3], [0.7, 2.0], [-1.0, 0.2]
    expected = mean_bce(real, 1) + 0.5 * mean_bce(wrong, 0) + 0.5 * mean_bce(fake, 0)
    loss = discriminator_loss(torch.tensor(real), torch.tensor(wrong), torch.tensor(fake))
    close(loss, expected)

    # raising d_wrong moves the loss by exactly half its own BCE change
    z = torch.zeros(1)
    delta = discriminator_loss(z, torch.tensor([3.0]), z) - discriminator_loss(z, z, z)
    close(delta, 0.5 * (bce(3.0, 0) - LOG2))


def test_label_smoothing_changes_only_real_term() -> None:
    real, wrong, fake = torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([-0.5])
    plain = discriminator_loss(real, wrong, fake)
    smoothed = discriminator_loss(real, wrong, fake, smooth=0.1)
    assert smoothed > plain  # a confident real logit is now penalised
    close(smoothed - plain, bce(2.0, 0.9) - bce(2.0, 1.0))


@pytest.mark.parametrize("smooth", [-0.1, 1.0, 1.5])
def test_bad_smooth_raises(smooth: float) -> None:
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="smooth"):
        discriminator_loss(z, z, z, smooth=smooth)


# --- interpolation / pixel / feature terms ----------------------------------


def test_interpolate_embeddings() -> None:
    e1, e2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -2.0]])
    torch.testing.assert_close(interpolate_embeddings(e1, e2), torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(interpolate_embeddings(e1, e2, beta=0.25),
                               torch.tensor([[2.5, -1.0]]))
    torch.testing.assert_close(interpolate_embeddings(e1, e2, beta=1.0), e1)
    with pytest.raises(ValueError):
        interpolate_embeddings(e1, torch.zeros(1, 3))


def test_l1_loss() -> None:
    fake = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    real = torch.tensor([[0.0, 1.0], [0.5, -1.0]])
    close(l1_loss(fake, real), (1 + 2 + 0 + 1) / 4)


def test_feature_matching_known_value() -> None:
    # batch means: real (2, 0), fake (0, 1) -> ((2-0)^2 + (0-1)^2) / 2 = 2.5
    real = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    fake = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    close(feature_matching_loss(real, fake), 2.5)


def test_feature_matching_compares_batch_means_not_samples() -> None:
    real = torch.tensor([[1.0], [-1.0]])
    fake = torch.tensor([[-1.0], [1.0]])  # per-sample different, same mean
    close(feature_matching_loss(real, fake), 0.0)


def test_feature_matching_gradient_skips_real() -> None:
    real = torch.randn(4, 8, 4, 4, requires_grad=True)
    fake = torch.randn(4, 8, 4, 4, requires_grad=True)
    feature_matching_loss(real, fake).backward()
    assert real.grad is None
    assert fake.grad is not None and fake.grad.abs().sum() > 0


# --- combined generator loss ------------------------------------------------


def test_generator_loss_only_adv_by_default() -> None:
    d_fake = torch.tensor([0.5, -0.5])
    total, parts = generator_loss(d_fake, d_int=torch.zeros(2), fake=torch.ones(2),
                                  real=torch.zeros(2))
    assert set(parts) == {"adv"}
    torch.testing.assert_close(total, generator_adv_loss(d_fake))


def test_generator_loss_includes_weighted_terms() -> None:
    d_fake, d_int = torch.tensor([0.5, -0.5]), torch.tensor([1.0, 2.0])
    fake, real = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    fr, ff = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0]])
    total, parts = generator_loss(d_fake, d_int=d_int, fake=fake, real=real, feat_real=fr,
                                  feat_fake=ff, int_coef=1.0, l1_coef=10.0, fm_coef=0.5)
    assert set(parts) == {"adv", "int", "l1", "fm"}
    close(parts["l1"], 0.5)
    close(parts["fm"], 4.0)
    expected = (mean_bce([0.5, -0.5], 1) + 1.0 * mean_bce([1.0, 2.0], 1)
                + 10.0 * 0.5 + 0.5 * 4.0)
    close(total, expected)

    total, parts = generator_loss(d_fake, d_int=d_int, fake=fake, real=real, l1_coef=2.0)
    assert set(parts) == {"adv", "l1"}
    close(total, mean_bce([0.5, -0.5], 1) + 2.0 * 0.5)


@pytest.mark.parametrize(
    "kwargs, missing",
    [
        ({"int_coef": 1.0}, "d_int"),
        ({"l1_coef": 1.0, "fake": torch.zeros(2)}, "real"),
        ({"fm_coef": 1.0, "feat_real": torch.zeros(2, 3)}, "feat_fake"),
    ],
)
def test_generator_loss_missing_input_raises(kwargs: dict, missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        generator_loss(torch.zeros(2), **kwargs)


def test_generator_loss_negative_coef_raises() -> None:
    with pytest.raises(ValueError, match="l1_coef"):
        generator_loss(torch.zeros(2), fake=torch.zeros(2), real=torch.zeros(2), l1_coef=-1.0)


# --- GAN-INT must actually reach the generator -------------------------------


def _g_grads(G, D, z, z_int, emb, e_int, int_coef: float, int_only: bool = False):
    G.zero_grad(set_to_none=True)
    d_fake = D(G(z, emb), emb)
    d_int = D(G(z_int, e_int), e_int)
    loss = gan_int_loss(d_int) if int_only else generator_loss(
        d_fake, d_int=d_int, int_coef=int_coef)[0]
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in G.parameters()]


def test_gan_int_changes_generator_gradients() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32, ca=False)
    G, D = Generator(cfg), Discriminator(cfg)
    G, D = G.double(), D.double()  # exact gradient bookkeeping below
    emb = torch.randn(4, cfg.emb_dim, dtype=torch.float64)
    e_int = interpolate_embeddings(emb, emb.roll(1, dims=0))  # pairs with no real image
    z = torch.randn(4, cfg.z_dim, dtype=torch.float64)
    z_int = torch.randn(4, cfg.z_dim, dtype=torch.float64)

    g0 = _g_grads(G, D, z, z_int, emb, e_int, int_coef=0.0)
    g1 = _g_grads(G, D, z, z_int, emb, e_int, int_coef=1.0)
    g_int = _g_grads(G, D, z, z_int, emb, e_int, int_coef=0.0, int_only=True)

    assert any(not torch.allclose(a, b) for a, b in zip(g0, g1))
    # the difference is exactly the GAN-INT gradient, which is non-trivial
    assert sum(g.abs().sum() for g in g_int) > 0
    for a, b, c in zip(g0, g1, g_int):
        torch.testing.assert_close(b, a + c)
    # and it reaches the generator's text projection, i.e. flows through e_int
    proj_idx = [i for i, p in enumerate(G.parameters()) if p is G.proj.net[0].weight][0]
    assert g_int[proj_idx].abs().sum() > 0


def test_mode_seeking_loss_falls_as_images_spread() -> None:
    z1, z2 = torch.zeros(4, 8), torch.ones(4, 8)  # |z1 - z2| = 1
    near, far = torch.zeros(4, 3, 8, 8), torch.full((4, 3, 8, 8), 0.5)
    assert mode_seeking_loss(near, far, z1, z2).item() == pytest.approx(2.0, rel=1e-4)  # 1 / 0.5
    assert mode_seeking_loss(near, near + 1.0, z1, z2) < mode_seeking_loss(near, far, z1, z2)
    assert mode_seeking_loss(near, near, z1, z2).item() == pytest.approx(1e5)  # collapse: large, finite


def test_kl_and_mode_seeking_terms_are_weighted_in() -> None:
    d_fake, kl, ms = torch.zeros(4), torch.tensor(0.3), torch.tensor(2.0)
    total, parts = generator_loss(d_fake, kl=kl, ms=ms, kl_coef=2.0, ms_coef=0.5)
    assert parts.keys() == {"adv", "kl", "ms"}
    assert total.item() == pytest.approx(parts["adv"].item() + 0.6 + 1.0)
    with pytest.raises(ValueError, match="kl_coef=1.0 > 0 but kl is None"):
        generator_loss(d_fake, kl_coef=1.0)
