"""DF-GAN beside GAN-CLS: every block fused with the text, the hinge loss, MA-GP, and the family
carried through training, resume, checkpoints and the readers of generator.pt."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from t2i.checkpoint import CHECKPOINT, GENERATOR, load_generator, resume_blockers
from t2i.families import get_family
from t2i.families.common import build_discriminator
from t2i.families.df_gan import Affine, DFConfig, DFDiscriminator, DFGenerator
from t2i.families.gan_cls import Generator
from t2i.gan import gan_step, model_config, step_inputs, trainables
from t2i.losses import hinge_discriminator_loss, hinge_generator_loss, ma_gp
from t2i.params import TrainParams

from tests.test_train import TINY, train

GAN_CLS = get_family("gan-cls").reads  # GAN-CLS's own keys

DF = {**TINY, "arch": "df-gan", "df_gan": {"ngf": 4, "ndf": 4}}
CFG = DFConfig(emb_dim=16, z_dim=8, ngf=4, ndf=4, image_size=32, fusion_hidden=None)


def randomise_affines(G: nn.Module, seed: int = 0) -> None:
    """Give every affine's last layers random weights (they start at zero: text has no say yet)."""
    g = torch.Generator().manual_seed(seed)
    for m in G.modules():
        if isinstance(m, Affine):
            for mlp in (m.gamma, m.beta):
                mlp[2].weight.data = torch.randn(mlp[2].weight.shape, generator=g) * 0.5


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_and_range(size):
    cfg = DFConfig(emb_dim=16, z_dim=8, ngf=4, ndf=4, image_size=size, fusion_hidden=None)
    G, D = DFGenerator(cfg), DFDiscriminator(cfg)
    img = G(torch.randn(3, 8), torch.randn(3, 16))
    assert img.shape == (3, 3, size, size) and img.abs().max() <= 1
    assert len(G.blocks) == cfg.n_blocks and D.features(img).shape == (3, 32, 4, 4)  # 8 ndf at 4x4
    assert D(img, torch.randn(3, 16)).shape == (3,)


@pytest.mark.parametrize("gate", [0.0, 1.0])
def test_d_gate_sets_where_the_residual_gates_start(gate):
    """train.df_gan.d_gate: 0 is DF-GAN's start (D begins as pooled 1x1 shortcuts), 1 opens the
    residual convolutions from the first step; either way the gates are learnt from there."""
    from t2i.gan import model_config, trainables

    cfg = TrainParams(**{**DF, "df_gan": {**DF["df_gan"], "d_gate": gate}})
    t = trainables(cfg, model_config(cfg, 16, 32))
    gates = [b.gamma for b in t.D.blocks]
    assert len(gates) == CFG.n_blocks and all(g.item() == gate and g.requires_grad for g in gates)
    img = torch.randn(2, 3, 32, 32)
    closed = DFDiscriminator(CFG)
    closed.load_state_dict(t.D.state_dict())
    closed.open_gates(0.0)
    assert torch.allclose(closed.features(img), t.D.features(img), atol=1e-6) == (gate == 0.0)  # t.D: channels_last


def test_the_sentence_changes_the_output_of_every_generator_block():
    """Each block, given the same input features, answers differently to a different sentence:
    the text enters every block, not only the first."""
    G = DFGenerator(CFG)
    randomise_affines(G)
    z, e1, e2 = torch.randn(2, 8), torch.randn(2, 16), torch.randn(2, 16)
    h = G.fc(z).view(2, -1, 4, 4)
    for i, block in enumerate(G.blocks):
        a, b = block(h, torch.cat([z, e1], 1)), block(h, torch.cat([z, e2], 1))
        assert (a - b).abs().max() > 1e-4, f"block {i} ignores the sentence"
        h = a
    assert not torch.allclose(G(z, e1), G(z, e2))


def test_affines_start_as_the_identity():
    """gamma = 1, beta = 0 at initialisation (DF-GAN): a fresh G draws the same for any caption."""
    x, c = torch.randn(2, 5, 4, 4), torch.randn(2, 7)
    assert torch.equal(Affine(7, 5)(x, c), x)
    G = DFGenerator(CFG)
    z = torch.randn(2, 8)
    assert torch.equal(G(z, torch.randn(2, 16)), G(z, torch.randn(2, 16)))


def test_discriminator_reads_the_text():
    D = DFDiscriminator(CFG)
    img = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(D(img, torch.randn(2, 16)), D(img, torch.randn(2, 16)))


def test_the_registry_builds_each_family():
    cfg = TrainParams(**TINY)
    G = get_family("gan-cls").generator(model_config(cfg, 16, 32))
    assert isinstance(G, Generator)
    cfg = TrainParams(**DF)
    G, D = get_family("df-gan").generator(model_config(cfg, 16, 32)), build_discriminator(cfg, model_config(cfg, 16, 32))
    assert isinstance(G, DFGenerator) and isinstance(D, DFDiscriminator) and G.cfg.ngf == 4


# --------------------------------------------------------------------------- losses


def test_hinge_terms_on_known_scores():
    d_real, d_wrong, d_fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0]), torch.tensor([0.5, -1.5])
    # real: relu(1 - [2, .5]) = [0, .5] -> .25; fake: relu(1 + [.5, -1.5]) = [1.5, 0] -> .75;
    # wrong: relu(1 + [-2, 0]) = [0, 1] -> .5; D = .25 + (.75 + .5) / 2
    assert hinge_discriminator_loss(d_real, d_wrong, d_fake).item() == pytest.approx(0.875)
    assert hinge_discriminator_loss(d_real, None, d_fake).item() == pytest.approx(1.0)
    assert hinge_generator_loss(d_fake).item() == pytest.approx(0.5)


class Constant(nn.Module):
    """A 'discriminator' whose output does not depend on its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, img, emb):
        return self.b.expand(img.size(0))


class Linear(nn.Module):
    """D(img, emb) = <w, img> + <v, emb>: the gradient is (w, v) for every sample."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.v = nn.Parameter(torch.full((3, 2, 2), 0.5)), nn.Parameter(torch.full((4,), 0.5))

    def forward(self, img, emb):
        return (img * self.w).flatten(1).sum(1) + emb @ self.v


def inputs(B=3):
    return torch.randn(B, 3, 2, 2, requires_grad=True), torch.randn(B, 4, requires_grad=True)


def test_ma_gp_is_zero_for_a_d_that_ignores_its_inputs():
    img, emb = inputs()
    assert ma_gp(Constant()(img, emb), img, emb).item() == 0.0


def test_ma_gp_known_value_and_power():
    img, emb = inputs()
    # ||(w, v)||^2 = 16 * 0.25 = 4: norm 2, so 2^6 and 2^2
    assert ma_gp(Linear()(img, emb), img, emb).item() == pytest.approx(64.0)
    assert ma_gp(Linear()(img, emb), img, emb, power=2).item() == pytest.approx(4.0)


def test_ma_gp_gradient_reaches_d_and_the_text_path():
    """The penalty's own gradient trains D's image path and its weights on the sentence. (It
    cannot reach a text encoder before D: D is piecewise linear, so its input gradient does
    not change with the sentence; DF-GAN's encoder is frozen anyway.)"""
    torch.manual_seed(0)
    D = DFDiscriminator(CFG)
    for block in D.blocks:
        block.gamma.data.fill_(0.5)  # the residual branches on (they start switched off)
    img, emb = torch.randn(4, 3, 32, 32, requires_grad=True), torch.randn(4, 16, requires_grad=True)
    gp = ma_gp(D(img, emb), img, emb)
    assert gp.item() > 0
    gp.backward()
    for name, p in [("from_rgb", D.from_rgb.weight), ("residual conv", D.blocks[0].residual[0].weight),
                    ("block gate", D.blocks[0].gamma), ("head", D.head.joint[2].weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no MA-GP gradient in {name}"
    assert D.head.joint[0].weight.grad[:, 32:].abs().sum() > 0  # the head's weights on the sentence
    # and the sentence's share of the norm counts: without it the penalty is smaller
    img2 = img.detach().requires_grad_(True)
    only_image = torch.autograd.grad(D(img2, emb.detach()).sum(), img2)[0].flatten(1).norm(dim=1).pow(6).mean()
    assert gp.item() > only_image.item()


def test_df_step_updates_both_models_and_reports_the_penalty():
    cfg = TrainParams(**DF)
    t = trainables(cfg, model_config(cfg, 16, 32))
    batch = {"image": torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), "emb": torch.randn(8, 10, 16),
             "class_id": torch.arange(8) % 3}
    x = step_inputs(batch, cfg, torch.Generator().manual_seed(0))
    assert x.draws == {}  # GAN-INT's, conditioning augmentation's and mode seeking's draws are GAN-CLS's
    before = [p.clone() for p in (*t.G.parameters(), *t.D.parameters())]
    out = gan_step(t, x, cfg)
    after = list(t.G.parameters()) + list(t.D.parameters())
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) > len(before) // 2
    assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake", "d_magp"}
    assert all(not v.requires_grad for v in out.values()) and out["d_magp"] >= 0
    off = TrainParams(**{**DF, "df_gan": {**DF["df_gan"], "magp_coef": 0.0}})
    assert "d_magp" not in gan_step(trainables(off, model_config(off, 16, 32)), x, off)


# --------------------------------------------------------------------------- training and files


@pytest.mark.parametrize("levers", [{}, {"ema": 0.9, "augment": "color,translation,cutout", "r1_coef": 1.0,
                                         "spectral_norm": True, "g_turn": True}])
def test_df_gan_trains_resumes_to_the_same_bytes(train_urls, tmp_path, levers):
    train(train_urls, tmp_path / "full", checkpoint_every=2, **{**DF, **levers})

    def crash(step, G, D):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_urls, tmp_path / "cut", checkpoint_every=2, on_step=crash, **{**DF, **levers})
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["step"] == 4
    assert train(train_urls, tmp_path / "cut", checkpoint_every=2, **{**DF, **levers})["resumed"]
    assert sha(tmp_path / "full" / GENERATOR) == sha(tmp_path / "cut" / GENERATOR)


def test_the_checkpoint_names_its_family_and_only_its_keys(train_urls, tmp_path):
    train(train_urls, tmp_path / "df", **{**DF, "epochs": 1})
    G, config = load_generator(tmp_path / "df" / GENERATOR)
    assert isinstance(G, DFGenerator) and not G.training
    assert config["arch"] == "df-gan" and config["df_gan"]["ngf"] == 4 == G.cfg.ngf
    assert not set(GAN_CLS) & set(config)
    train(train_urls, tmp_path / "cls", **{**TINY, "epochs": 1})
    G, config = load_generator(tmp_path / "cls" / GENERATOR)
    assert isinstance(G, Generator) and "arch" not in config and "df_gan" not in config  # as before families


def test_changing_the_family_blocks_a_resume(train_urls, tmp_path):
    train(train_urls, tmp_path, **{**DF, "epochs": 1})
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    other = {k: v for k, v in saved["config"].items() if k != "arch"}  # a GAN-CLS record has no arch
    assert any(w.startswith("arch ") for w in resume_blockers(saved, other))
    assert resume_blockers(saved, other) == ["arch 'df-gan' -> 'gan-cls'"]  # one line, not every key
    wider = {**saved["config"], "df_gan": {**saved["config"]["df_gan"], "ngf": 8}}
    assert any(w.startswith("df_gan ") for w in resume_blockers(saved, wider))


def test_compile_is_refused_for_df_gan():
    from t2i import T2IError
    from t2i.params import load_params

    with pytest.raises(T2IError, match="train.compile: not supported with arch df-gan"):
        load_params(None, ["train.arch=df-gan", "train.compile=true"])


def test_generate_draws_with_a_df_gan_generator(tmp_path):
    """``t2i generate`` (and ``serve``, through the same loader) needs no flag for the family."""
    from dataclasses import asdict

    from t2i.checkpoint import save_generator
    from t2i.generate import generate

    torch.manual_seed(0)
    cfg = DFConfig(emb_dim=384, z_dim=8, ngf=4, ndf=4, image_size=32, fusion_hidden=None)
    G = DFGenerator(cfg)
    randomise_affines(G)
    save_generator(tmp_path / GENERATOR, G, {"arch": "df-gan", "model": asdict(cfg), "text_model": "all-MiniLM-L6-v2"})
    a = generate(tmp_path / GENERATOR, ["a red flower", "a blue flower"], n=2, seed=7)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, generate(tmp_path / GENERATOR, ["a red flower", "a blue flower"], n=2, seed=7))
    assert not torch.allclose(a[:2], a[2:])  # the caption matters


def test_the_sentence_enters_at_the_noises_scale():
    """Unit-norm MiniLM vectors become norm sqrt(D) (each dimension ~1, like the noise), same direction."""
    from t2i.families.df_gan import sentence

    e = torch.nn.functional.normalize(torch.randn(5, 384), dim=1) * 0.3
    s = sentence(e)
    assert torch.allclose(s.norm(dim=1), torch.full((5,), 384 ** 0.5)) and torch.allclose(s / s.norm(dim=1, keepdim=True), e / 0.3, atol=1e-6)
