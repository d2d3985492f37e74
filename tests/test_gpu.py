"""The training path on a GPU (skipped without CUDA; run by scripts/gpu-check.sh on a lent GPU)."""

from __future__ import annotations

import pytest
import torch

from t2i.bench import fake_batch, train_step
from t2i.checkpoint import GENERATOR, load_generator
from t2i.families.gan_cls import ModelConfig
from t2i.gan import gan_step, step_inputs, trainables
from t2i.params import PLAIN, TrainParams
from tests.test_train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("fast", [{"precision": "fp32"}, {"precision": "bf16", "channels_last": True}])
def test_gan_step_on_cuda_updates_both_models(fast):
    cfg = TrainParams(ngf=16, ndf=16, batch_size=16, device="cuda", **PLAIN, **fast)
    t = trainables(cfg, ModelConfig(emb_dim=32, z_dim=cfg.z_dim, proj_dim=cfg.proj_dim, ngf=16, ndf=16, image_size=64, ca=False),
                   "cuda")
    assert all(g["fused"] for opt in (t.opt_g, t.opt_d) for g in opt.param_groups)
    before = [p.detach().clone() for p in (*t.G.parameters(), *t.D.parameters())]
    x = step_inputs(fake_batch(16, 64, 32), cfg, torch.Generator().manual_seed(0), "cuda")
    out = gan_step(t, x, cfg)
    assert all(v.device.type == "cuda" and torch.isfinite(v) for v in out.values())
    after = list((*t.G.parameters(), *t.D.parameters()))
    assert all(p.dtype == torch.float32 for p in after)  # bf16 is for the passes, never the weights
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) > 0.9 * len(after)


def test_training_on_cuda_saves_a_generator_that_loads_on_cpu(train_urls, tmp_path):
    summary = train(train_urls, tmp_path, epochs=1, device="cuda", precision="auto", channels_last=True)
    assert summary["steps"] > 0
    G, config = load_generator(tmp_path / GENERATOR, "cpu")
    assert config["device"] == "cuda" and config["precision"] == "bf16"  # auto, on CUDA
    images = G(torch.randn(2, G.cfg.z_dim), torch.randn(2, G.cfg.emb_dim))
    assert torch.isfinite(images).all()


def test_bench_times_the_cuda_step():
    r = train_step(TrainParams(ngf=16, ndf=16, batch_size=16), image_size=64, emb_dim=32, device="cuda", seconds=0.5)
    assert r["img_s"] > 0 and r["flops_per_img"] > 0


@pytest.mark.parametrize("fast", [{"precision": "fp32"}, {"precision": "bf16", "channels_last": True}])
def test_df_gan_step_with_ma_gp_on_cuda(fast):
    from t2i.gan import model_config

    cfg = TrainParams(arch="df-gan", batch_size=16, device="cuda", df_gan={"ngf": 16, "ndf": 16}, **PLAIN, **fast)
    t = trainables(cfg, model_config(cfg, 32, 64), "cuda")
    before = [p.detach().clone() for p in (*t.G.parameters(), *t.D.parameters())]
    out = gan_step(t, step_inputs(fake_batch(16, 64, 32), cfg, torch.Generator().manual_seed(0), "cuda"), cfg)
    assert all(v.device.type == "cuda" and torch.isfinite(v) for v in out.values()) and "d_magp" in out
    after = list((*t.G.parameters(), *t.D.parameters()))
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) > 0.5 * len(after)


@pytest.mark.parametrize("extra", [{}, {"ca": True, "channels_last": True}, {"arch": "df-gan"}])
def test_step_inputs_on_cuda_are_the_cpu_inputs_moved(extra):
    """One pinned, non-blocking copy per dtype and uint8 images converted on the device: the same
    values as the CPU path, from the same draws."""
    cfg = TrainParams(batch_size=8, **extra)
    batch = fake_batch(8, 32, 16)
    on_cpu = step_inputs(batch, cfg, torch.Generator().manual_seed(0), "cpu")
    on_gpu = step_inputs(batch, cfg, torch.Generator().manual_seed(0), "cuda")
    torch.cuda.synchronize()
    for name in on_cpu.__dataclass_fields__:
        a, b = getattr(on_cpu, name), getattr(on_gpu, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert b.device.type == "cuda" and b.dtype == a.dtype and b.is_contiguous() == a.is_contiguous(), name
            torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-6, msg=name)  # CUDA may divide by a reciprocal


def test_training_with_workers_on_cuda_reads_pinned_batches(train_urls, tmp_path):
    summary = train(train_urls, tmp_path, epochs=2, device="cuda", workers=2)
    assert summary["steps"] == 2 * (32 // 8)  # the train_urls fixture: 32 images, batch 8
