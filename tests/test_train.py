"""Training loop: each loss switch matters, resume == uninterrupted, NaN stop, generate errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2i import T2IError
from t2i.train import CHECKPOINT, GENERATOR, load_generator, mismatched, pick_caption_embeddings, training_loop

TINY = dict(image_size=32, emb_dim=16, ngf=8, ndf=8, z_dim=8, proj_dim=8, batch_size=8, epochs=2,
            shuffle_buffer=16, threads=1, progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_on_cpu(train_urls, tmp_path):
    training_loop(train_urls, tmp_path / "a", **TINY)
    training_loop(train_urls, tmp_path / "b", **TINY)
    assert same(weights(tmp_path / "a" / GENERATOR), weights(tmp_path / "b" / GENERATOR))


@pytest.mark.parametrize("switch", [dict(int_coef=0.0), dict(cls=False), dict(l1_coef=1.0),
                                    dict(fm_coef=1.0), dict(label_smoothing=0.1), dict(captions_per_step=4)])
def test_each_loss_switch_changes_training(train_urls, tmp_path, switch):
    base = {**TINY, "epochs": 1}
    training_loop(train_urls, tmp_path / "base", **base)
    training_loop(train_urls, tmp_path / "varied", **{**base, **switch})
    assert not same(weights(tmp_path / "base" / GENERATOR), weights(tmp_path / "varied" / GENERATOR))


def test_resume_equals_uninterrupted(train_urls, tmp_path):
    training_loop(train_urls, tmp_path / "full", checkpoint_every=2, **TINY)

    def crash(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training_loop(train_urls, tmp_path / "cut", checkpoint_every=2, on_step=crash, **TINY)
    assert not (tmp_path / "cut" / GENERATOR).exists()
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["step"] == 4
    summary = training_loop(train_urls, tmp_path / "cut", checkpoint_every=2, **TINY)
    assert summary["resumed"]
    assert same(weights(tmp_path / "full" / GENERATOR), weights(tmp_path / "cut" / GENERATOR))
    full = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=False)
    cut = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)
    assert same(full["D"], cut["D"]) and full["step"] == cut["step"]


def test_changed_params_start_fresh(train_urls, tmp_path):
    training_loop(train_urls, tmp_path, **{**TINY, "epochs": 1})
    summary = training_loop(train_urls, tmp_path, **{**TINY, "epochs": 1, "lr": 1e-3})
    assert not summary["resumed"]


def test_nan_loss_stops_and_keeps_last_checkpoint(train_urls, tmp_path, monkeypatch):
    import t2i.train as train

    real = train.discriminator_loss

    def poisoned(*args, **kw):
        loss = real(*args, **kw)
        poisoned.calls += 1
        return loss * float("nan") if poisoned.calls == 3 else loss

    poisoned.calls = 0
    monkeypatch.setattr(train, "discriminator_loss", poisoned)
    with pytest.raises(T2IError, match="non-finite loss at step 3"):
        training_loop(train_urls, tmp_path, checkpoint_every=2, **TINY)
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["G"].values() if v.is_floating_point())


def test_mismatched_picks_another_class():
    g = torch.Generator().manual_seed(0)
    cls = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    for _ in range(20):
        j = mismatched(cls, g)
        assert (cls[j] != cls).all()
    one_class = mismatched(torch.zeros(4, dtype=torch.long), g)
    assert (one_class != torch.arange(4)).all()


def test_caption_mean_uses_distinct_captions():
    emb = torch.arange(10.0)[None, :, None].repeat(3, 1, 2)  # caption c has value c
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(pick_caption_embeddings(emb, 10, g), torch.full((3, 2), 4.5))
    one = pick_caption_embeddings(emb, 1, g)
    assert ((one >= 0) & (one <= 9) & (one == one.round())).all()


def test_load_generator_errors(tmp_path):
    with pytest.raises(T2IError, match="missing generator checkpoint"):
        load_generator(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(T2IError, match="bad.pt"):
        load_generator(tmp_path / "bad.pt")


def test_rerun_of_a_finished_run_keeps_its_checkpoint(train_urls, tmp_path):
    training_loop(train_urls, tmp_path, **{**TINY, "epochs": 1})
    before = (tmp_path / CHECKPOINT).read_bytes()
    summary = training_loop(train_urls, tmp_path, **{**TINY, "epochs": 1})
    assert summary["resumed"] and (tmp_path / CHECKPOINT).read_bytes() == before
