"""Shape, range and init tests for the GAN-CLS generator / discriminator (t2i/families/gan_cls.py)."""

import dataclasses

import pytest
import torch
import torch.nn as nn

from t2i.families.gan_cls import (
    Discriminator,
    Generator,
    ModelConfig,
    TextProjection,
    init_weights,
)

B = 4


def tiny(image_size: int = 64) -> ModelConfig:
    return ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=image_size, ca=False)


def inputs(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(B, cfg.z_dim), torch.randn(B, cfg.emb_dim)


@pytest.mark.parametrize("size", [32, 64])
def test_generator_shape_and_range(size: int) -> None:
    cfg = tiny(size)
    z, emb = inputs(cfg)
    img = Generator(cfg)(z, emb)
    assert img.shape == (B, 3, size, size)
    assert img.min() >= -1 and img.max() <= 1
    assert img.abs().max() > 0  # not a dead output


@pytest.mark.parametrize("size", [32, 64])
def test_discriminator_shapes(size: int) -> None:
    cfg = tiny(size)
    _, emb = inputs(cfg)
    D = Discriminator(cfg)
    img = torch.randn(B, 3, size, size)

    logits = D(img, emb)
    assert logits.shape == (B,)

    logits2, feat = D(img, emb, return_features=True)
    assert feat.shape == (B, cfg.ndf * 8, 4, 4)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(D.features(img), feat)


def test_generator_widths_64() -> None:
    G = Generator(tiny(64))
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in convs] == [64, 32, 16, 8, 3]  # ngf*8, 4, 2, 1, rgb


def test_discriminator_widths_64() -> None:
    D = Discriminator(tiny(64))
    convs = [m for m in D.image_net if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [8, 16, 32, 64]  # ndf, *2, *4, *8
    bns = [m for m in D.image_net if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3  # no BN after the first conv


def test_discriminator_uses_text() -> None:
    cfg = tiny()
    D = Discriminator(cfg).eval()
    img = torch.randn(B, 3, 64, 64)
    a = D(img, torch.randn(B, cfg.emb_dim))
    b = D(img, torch.randn(B, cfg.emb_dim))
    assert not torch.allclose(a, b)


def test_text_projection_shape() -> None:
    out = TextProjection(16, 8)(torch.randn(B, 16))
    assert out.shape == (B, 8)


def test_init_weights_stats() -> None:
    torch.manual_seed(0)
    G, D = Generator(tiny()), Discriminator(tiny())
    big = G.net[3].weight  # (ngf*8, ngf*4, 4, 4) = 64*32*16 weights
    assert big.numel() > 10_000
    assert abs(big.mean().item()) < 0.002
    assert 0.015 < big.std().item() < 0.025
    # every layer big enough for a stable estimate (PyTorch's default init misses some)
    weights = [m.weight for m in [*G.modules(), *D.modules()]
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
               and m.weight.numel() >= 2048]
    assert len(weights) >= 6
    assert all(0.015 < w.std().item() < 0.025 for w in weights)

    bn_w = torch.cat([m.weight.detach() for m in [*G.modules(), *D.modules()]
                      if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))])
    assert abs(bn_w.mean().item() - 1.0) < 0.01
    assert 0.01 < bn_w.std().item() < 0.03
    biases = [m.bias for m in [*G.modules(), *D.modules()]
              if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d))
              and m.bias is not None]
    assert biases and all((b == 0).all() for b in biases)


def test_init_weights_on_fresh_layer() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(256, 256)  # default init has std ~0.036
    init_weights(lin)
    assert 0.015 < lin.weight.std().item() < 0.025
    assert (lin.bias == 0).all()


@pytest.mark.parametrize("bad", [16, 48, 256])
def test_bad_image_size(bad: int) -> None:
    with pytest.raises(ValueError, match=str(bad)):
        ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=bad, ca=False)


def test_the_params_defaults_build_the_default_models() -> None:
    """ModelConfig holds no defaults of its own: the default params give the default run's shapes."""
    from t2i.families import get_family
    from t2i.gan import model_config
    from t2i.params import TrainParams

    cfg = model_config(TrainParams(), emb_dim=384, image_size=64)
    from t2i.families.common import build_discriminator

    G, D = get_family("gan-cls").generator(cfg), build_discriminator(TrainParams(), cfg)
    assert isinstance(G, Generator) and isinstance(D, Discriminator)
    assert (cfg.ngf, cfg.ndf, cfg.z_dim, cfg.proj_dim, cfg.ca) == (32, 32, 100, 128, False)
    with pytest.raises(TypeError, match="missing"):
        ModelConfig(emb_dim=384)  # no silent width


def test_the_stored_config_keeps_its_key_order():
    """Every checkpoint pickles ModelConfig.stored(): a new field order, or a field added later
    stored at its default, would change the bytes of a GAN-CLS generator.pt (and dvc.lock)
    without changing a weight."""
    cfg = ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32, ca=False)
    old = ["emb_dim", "z_dim", "proj_dim", "ngf", "ndf", "image_size", "channels", "ca"]
    from t2i.families.common import stored_shapes

    assert list(stored_shapes(cfg)) == old and ModelConfig(**stored_shapes(cfg)) == cfg
    near = ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32, ca=False, upsample="nearest")
    assert list(stored_shapes(near)) == [*old, "upsample"] and ModelConfig(**stored_shapes(near)) == near
    turned = ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32, ca=False, turn=True)
    assert list(stored_shapes(turned)) == [*old, "turn"] and ModelConfig(**stored_shapes(turned)) == turned


# z[0] that turn_by_noise reads as no turn, a quarter turn anticlockwise (Phi = 1/4), a half turn and three quarters
NO_TURN, QUARTER, HALF, THREE_QUARTERS = -40.0, -0.6744897501960817, 0.0, 0.6744897501960817


@pytest.mark.parametrize("z0, quarters", [(NO_TURN, 0), (QUARTER, 1), (HALF, 2), (THREE_QUARTERS, 3)])
def test_turn_by_noise_turns_each_map_by_the_angle_its_noise_names(z0, quarters):
    from t2i.families.common import turn_by_noise

    h = torch.randn(2, 5, 8, 8)
    z = torch.randn(2, 4)
    z[:, 0] = z0
    turned = turn_by_noise(h, z)
    # which way is anticlockwise on screen: row 0 at the top, so a quarter turn moves the right column to the top row
    torch.testing.assert_close(turned, h.rot90(quarters, (2, 3)), atol=1e-5, rtol=0)
    assert turned.dtype == h.dtype


@pytest.mark.parametrize("arch", ["gan-cls", "df-gan"])
def test_g_turn_turns_g_s_quarter_size_map_by_its_noise(arch):
    """With train.g_turn G is the same network whose (S/4)^2 map is turned: at no turn it draws
    what G without it draws with the same weights, at a half turn something else."""
    from t2i.families import get_family
    from t2i.gan import model_config
    from t2i.params import TrainParams

    family = get_family(arch)
    cfg = TrainParams(arch=arch, z_dim=8, g_turn=True)
    turned_cfg = model_config(cfg, 16, 32)
    torch.manual_seed(0)
    G_turn = family.generator(turned_cfg).eval()
    G = family.generator(dataclasses.replace(turned_cfg, turn=False)).eval()
    G.load_state_dict(G_turn.state_dict())
    z, emb = torch.randn(3, 8), torch.randn(3, 16)
    z[:, 0] = NO_TURN
    with torch.no_grad():
        torch.testing.assert_close(G_turn(z, emb), G(z, emb), atol=1e-6, rtol=0)
        z[:, 0] = HALF
        assert (G_turn(z, emb) - G(z, emb)).abs().amax() > 1e-3


def test_nearest_upsampling_builds_g_without_transposed_convs_and_loads_back(train_urls, tmp_path):
    from t2i.checkpoint import GENERATOR, load_generator
    from tests.test_train import train

    train(train_urls, tmp_path, epochs=1, g_upsample="nearest")
    G, config = load_generator(tmp_path / GENERATOR)
    assert config["g_upsample"] == "nearest" and config["model"]["upsample"] == "nearest"
    kinds = {type(m) for m in G.modules()}
    assert torch.nn.Upsample in kinds and sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules()) == 1
    assert G(torch.randn(2, 8), torch.randn(2, 16)).shape == (2, 3, 32, 32)


def test_conditioning_augmentation_samples_the_text_code() -> None:
    cfg = ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32, ca=True)
    G = Generator(cfg).eval()
    z, emb = inputs(cfg)
    mu, kl = G.condition(emb)
    assert mu.shape == (B, 8) and kl.item() >= 0
    eps = torch.randn(B, 8)
    code, _ = G.condition(emb, eps)
    assert not torch.equal(code, mu)  # sampled around the mean
    assert torch.equal(G(z, emb), G.decode(z, mu))  # without a draw (evaluation): the mean
    assert not hasattr(G, "proj") and not hasattr(Generator(tiny(32)), "ca")


def test_kl_is_zero_for_the_standard_normal() -> None:
    cfg = ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32, ca=True)
    G = Generator(cfg)
    nn.init.zeros_(G.ca[0].weight), nn.init.zeros_(G.ca[0].bias)  # mu = 0, log-variance = 0
    assert G.condition(torch.randn(B, 16))[1].item() == 0.0
