"""What the reporter and the probes run leave every module in the mode it was in, a frozen text
head inside a model in train mode included; gan_step gives D its gradients back."""

from __future__ import annotations

import pytest
import torch

from t2i.gan import gan_step, model_config, step_inputs, trainables
from t2i.ground import Coded, TextHead
from t2i.modes import evaluating, frozen
from t2i.params import TrainParams
from t2i.probes import caption_check
from t2i.report import sample_grid

from tests.test_families import batch
from tests.test_train import TINY


def coded_models():
    cfg = TrainParams(**TINY)
    nets = trainables(cfg, model_config(cfg, 8, 32))
    head = TextHead(16, 8, 8).eval().requires_grad_(False)  # frozen, as the grounding's
    return nets, Coded(nets.G, head), Coded(nets.D, head), head


def modes(*modules) -> list[bool]:
    return [m.training for module in modules for m in module.modules()]


def test_a_grid_leaves_g_and_the_text_head_as_they_were(tmp_path):
    nets, G, _, head = coded_models()
    nets.G.train()
    before = modes(nets.G, head)
    sample_grid(G, torch.randn(4, TINY["z_dim"]), torch.randn(2, 16), ["a", "b"], tmp_path / "g.png", "cpu")
    assert (tmp_path / "g.png").is_file() and modes(nets.G, head) == before and not head.training


def test_a_probe_leaves_d_and_the_text_head_as_they_were():
    nets, _, D, head = coded_models()
    probes = {"keys": ["k0", "k1"], "d_check": {"petal_colour": {
        "index": torch.tensor([0, 1]), "true_emb": torch.randn(2, 16), "altered_emb": torch.randn(2, 16)}}}
    for train_mode in (True, False):
        nets.D.train(train_mode)
        before = modes(nets.D, head)
        out = caption_check(D, torch.randn(2, 3, 32, 32), probes, ["k0", "k1"])
        assert 0 <= out["petal_colour"] <= 1 and modes(nets.D, head) == before and not head.training


def test_evaluating_and_frozen_restore_even_when_the_body_raises():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    net[1].eval()
    net[0].weight.requires_grad_(False)
    with pytest.raises(RuntimeError), evaluating(net), frozen(net):
        assert not any(modes(net)) and not any(p.requires_grad for p in net.parameters())
        raise RuntimeError
    assert modes(net) == [True, True, False]
    assert [p.requires_grad for p in net.parameters()] == [False, True, True, True]


def test_gan_step_gives_d_its_gradients_back_even_when_g_s_update_fails():
    cfg = TrainParams(**TINY)
    nets = trainables(cfg, model_config(cfg, 16, 32))
    x = step_inputs(batch(), cfg, torch.Generator().manual_seed(0))

    class Broken(torch.nn.Module):
        def forward(self, x, g_out):
            assert not any(p.requires_grad for p in nets.D.parameters())  # D is frozen in G's update
            raise RuntimeError("stop")

    nets.d_fakes = Broken()
    with pytest.raises(RuntimeError, match="stop"):
        gan_step(nets, x, cfg)
    assert all(p.requires_grad for p in nets.D.parameters())
