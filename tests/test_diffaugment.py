"""DiffAugment (train.augment): every image D sees goes through the same differentiable transforms,
real and fake alike; off, nothing is drawn and nothing changes."""

from __future__ import annotations

import pytest
import torch

from t2i import T2IError
from t2i.diffaugment import apply, draws
from t2i.gan import gan_step, model_config, step_inputs, trainables
from t2i.params import TrainParams, load_params

from tests.test_families import batch
from tests.test_train import TINY

ALL = "color,translation,cutout,turn"


def test_each_transform_changes_the_images_and_passes_the_gradient():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    for names in ("color", "translation", "cutout", "turn", ALL):
        d = draws(names, 4, 16, torch.Generator().manual_seed(1))
        out = apply(x, d)
        assert out.shape == x.shape and not torch.equal(out, x)
        x.grad = None
        (out * torch.randn_like(out)).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_i_th_real_and_fake_go_through_the_same_transform():
    img = torch.rand(3, 3, 16, 16)
    d = draws(ALL, 6, 16, torch.Generator().manual_seed(0))
    both = apply(torch.cat([img, img]), {k: torch.cat([v[:3], v[:3]]) for k, v in d.items()})
    assert torch.equal(both[:3], both[3:])
    shifted = apply(img, {"shift": torch.tensor([[2, 0], [0, -3], [0, 0]])})
    assert torch.equal(shifted[0, :, 2:], img[0, :, :-2]) and (shifted[0, :, :2] == 0).all()
    assert torch.equal(shifted[1, :, :, :-3], img[1, :, :, 3:]) and torch.equal(shifted[2], img[2])


def test_gan_step_gives_d_the_augmented_real_and_fake_images_and_g_its_gradient():
    cfg = TrainParams(**{**TINY, "augment": ALL})
    nets = trainables(cfg, model_config(cfg, 16, 32))
    x = step_inputs(batch(), cfg, torch.Generator().manual_seed(0))
    assert set(x.d_draws) == {"brightness", "saturation", "contrast", "shift", "cut", "turns", "mirror"}
    seen = {}
    d_passes, d_fakes = nets.d_passes, nets.d_fakes

    def spy_d(xd, fake):
        seen["real"], seen["fake"] = xd.real, fake
        return d_passes(xd, fake)

    def spy_g(xd, g_out):
        seen["g_fake"], seen["g_raw"] = g_out["fake"], g_out
        return d_fakes(xd, g_out)

    nets.d_passes, nets.d_fakes = spy_d, spy_g
    gan_step(nets, x, cfg)
    assert torch.equal(seen["real"], apply(x.real, x.d_draws)) and not torch.equal(seen["real"], x.real)
    assert "fake_int" in seen["g_raw"]  # GAN-INT's fakes are scored by D too, so they are seen through it
    assert seen["g_fake"].grad_fn is not None  # G's gradient flows back through the augmentation
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.G.parameters() if p.requires_grad)


def test_off_draws_nothing_and_the_draws_before_it_are_unchanged():
    on = step_inputs(batch(), TrainParams(**{**TINY, "augment": ALL}), torch.Generator().manual_seed(0))
    off = step_inputs(batch(), TrainParams(**TINY), torch.Generator().manual_seed(0))
    assert off.d_draws == {} and "augment" not in TrainParams(**TINY).recorded()
    assert torch.equal(on.z, off.z) and on.draws.keys() == off.draws.keys()
    assert all(torch.equal(on.draws[k], off.draws[k]) for k in off.draws)


def test_an_unknown_transform_is_named():
    with pytest.raises(T2IError, match=r"train.augment: unknown augmentation 'flip' \(known: color, translation, cutout, turn\)"):
        load_params(None, ["train.augment=color,flip"])
    assert TrainParams(augment=" cutout, color ").augment == "cutout,color"


@pytest.mark.parametrize("arch", ["gan-cls", "df-gan"])
def test_r1_is_the_squared_gradient_of_d_on_the_real_images_it_saw(arch):
    """train.r1_coef adds gamma / 2 * E ||dD(real)/d real||^2 to D's loss, on the (augmented) images
    D saw, and its gradient reaches D (a second-order term)."""
    from t2i.losses import r1_penalty

    cfg = TrainParams(**{**TINY, "arch": arch, "df_gan": {"ngf": 4, "ndf": 4}, "r1_coef": 4.0, "augment": "color"})
    nets = trainables(cfg, model_config(cfg, 16, 32))
    x = step_inputs(batch(), cfg, torch.Generator().manual_seed(0))
    out = gan_step(nets, x, cfg)
    assert out["d_r1"] > 0
    off = TrainParams(**{**TINY, "arch": arch, "df_gan": {"ngf": 4, "ndf": 4}, "augment": "color"})
    nets_off = trainables(off, model_config(off, 16, 32))
    base = gan_step(nets_off, step_inputs(batch(), off, torch.Generator().manual_seed(0)), off)
    torch.testing.assert_close(out["loss_d"], base["loss_d"] + 2.0 * out["d_r1"])
    img = torch.rand(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(3, 8, 8)
    torch.testing.assert_close(r1_penalty((img * w).sum(dim=(1, 2, 3)), img), w.pow(2).sum().expand(1)[0])


def test_r1_is_refused_where_its_input_gradient_cannot_be_taken():
    with pytest.raises(T2IError, match=r"train.r1_coef: its input gradient"):
        load_params(None, ["train.r1_coef=1", "train.nproc_per_node=2"])


def test_turn_is_a_quarter_turn_then_a_mirror_flip_and_keeps_every_pixel():
    img = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = apply(img, {"turns": torch.tensor([1, 3]), "mirror": torch.tensor([False, True])})
    assert torch.equal(out[0], img[0].rot90(1, (1, 2)))  # anticlockwise: the top row becomes the left column
    assert torch.equal(out[0, :, :, 0], img[0, :, 0].flip(-1))
    assert torch.equal(out[1], img[1].rot90(3, (1, 2)).flip(-1))
    assert torch.equal(out.flatten(1).sort(dim=1).values, img.flatten(1).sort(dim=1).values)  # colours and counts kept
    d = draws("turn", 4000, 8, torch.Generator().manual_seed(0))
    assert set(d["turns"].tolist()) == {0, 1, 2, 3} and 0.45 < d["mirror"].float().mean() < 0.55


def test_cutout_zeroes_a_square_of_half_the_side():
    img = torch.ones(2, 3, 16, 16)
    out = apply(img, {"cut": torch.tensor([[8, 8], [0, 15]])})
    assert (out[0] == 0).sum() == 3 * 8 * 8  # inside the image: the whole square
    assert (out[1] == 0).sum() == 3 * 4 * 5  # at the corner: what is left of it
