"""train.ema: the average of G's weights beside G, what generator.pt holds."""

from __future__ import annotations

import torch

from t2i.checkpoint import CHECKPOINT, GENERATOR, load_generator
from t2i.ema import decay_at
from t2i.gan import gan_step, model_config, step_inputs, trainables
from t2i.params import TrainParams

from tests.test_families import batch
from tests.test_train import DATA, TINY, train


def test_the_average_is_the_running_average_computed_by_hand_over_three_steps():
    cfg = TrainParams(**{**TINY, "ema": 0.5})
    nets = trainables(cfg, model_config(cfg, 16, 32))
    by_hand = [p.detach().clone() for p in nets.G.parameters()]
    rng = torch.Generator().manual_seed(0)
    for t in (1, 2, 3):
        gan_step(nets, step_inputs(batch(), cfg, rng), cfg)
        beta = decay_at(0.5, t)  # (1 + t) / (10 + t): 2/11, 3/12, 4/13, under the cap 0.5
        by_hand = [beta * a + (1 - beta) * p.detach() for a, p in zip(by_hand, nets.G.parameters())]
    assert [decay_at(0.5, t) for t in (1, 2, 3, 20)] == [2 / 11, 3 / 12, 4 / 13, 0.5] and nets.G_ema.updates == 3
    for a, e in zip(by_hand, nets.G_ema.module.parameters()):
        torch.testing.assert_close(e, a, rtol=1e-6, atol=1e-7)
    assert not any(torch.equal(e, p) for e, p in zip(nets.G_ema.module.parameters(), nets.G.parameters()))
    assert all(torch.equal(e, b) for e, b in zip(nets.G_ema.module.buffers(), nets.G.buffers()))  # BN stats copied


def test_generator_pt_holds_the_average_and_every_reader_gets_it(train_urls, tmp_path):
    from t2i.generate import fake_images

    train(train_urls, tmp_path, epochs=1, ema=0.9)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    blob = torch.load(tmp_path / GENERATOR, weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in saved["G_ema"].items() if k.startswith("module.")}
    assert blob["state_dict"].keys() == averaged.keys() == saved["G"].keys()
    assert all(torch.equal(blob["state_dict"][k], averaged[k]) for k in averaged)
    assert not all(torch.equal(blob["state_dict"][k], saved["G"][k]) for k in averaged)
    G, config = load_generator(tmp_path / GENERATOR)  # what generate, serve and evaluate call
    assert config["ema"] == 0.9 and all(torch.equal(G.state_dict()[k], averaged[k]) for k in averaged)
    z, emb = torch.randn(2, TINY["z_dim"]), torch.randn(2, DATA.emb_dim)
    assert torch.equal(fake_images(G, z, emb, "cpu"), fake_images(G, z, emb, "cpu"))
