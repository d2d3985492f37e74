"""Training loop: each loss switch matters, resume == uninterrupted, NaN stop, generate errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from t2i import T2IError
from t2i.checkpoint import CHECKPOINT, GENERATOR, load_generator, resume_blockers
from t2i.gan import pick_captions
from t2i.wrong import pick_wrong_class
from t2i.params import PLAIN, TrainParams
from t2i.train import DataSpec, training_loop

# The plain recipe (the default levers off: no grounding to train); tests/test_ground.py tests the levers.
TINY = dict(ngf=8, ndf=8, z_dim=8, proj_dim=8, batch_size=8, epochs=2, shuffle_buffer=16, threads=1, **PLAIN)
DATA = DataSpec(emb_dim=16, image_size=32, text_model="bag-of-words")


def train(urls, out, on_step=None, **params):
    """training_loop on the tiny shards with TINY params, overridden by ``params``."""
    return training_loop(urls, out, TrainParams(**{**TINY, **params}), data=DATA, on_step=on_step, progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_on_cpu(train_urls, tmp_path):
    train(train_urls, tmp_path / "a")
    train(train_urls, tmp_path / "b")
    assert same(weights(tmp_path / "a" / GENERATOR), weights(tmp_path / "b" / GENERATOR))


@pytest.mark.parametrize("switch", [dict(cls=False), dict(l1_coef=1.0), dict(fm_coef=1.0), dict(label_smoothing=0.1),
                                    dict(captions_per_step=4), dict(precision="bf16")])
def test_each_loss_switch_changes_training(train_urls, tmp_path, switch):
    """Switches that leave the random draws alone: a different result can only come from the switch
    (both runs in fp32 but for the switch: auto is bf16 on some CPUs)."""
    train(train_urls, tmp_path / "base", epochs=1, precision="fp32")
    train(train_urls, tmp_path / "varied", epochs=1, **{"precision": "fp32", **switch})
    assert not same(weights(tmp_path / "base" / GENERATOR), weights(tmp_path / "varied" / GENERATOR))


def test_precision_auto_is_fp32_on_a_cpu_without_bf16_to_the_byte(train_urls, tmp_path, monkeypatch):
    """On a CPU without bf16 in hardware, the default precision (auto) trains exactly as fp32
    does, config record included; on one with it, as bf16 does."""
    from t2i import device
    from t2i.device import pick_precision

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    for p in ("auto", "fp32"):
        train(train_urls, tmp_path / p, epochs=1, precision=p)
    for name in (GENERATOR, CHECKPOINT):
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "fp32" / name).read_bytes()
    assert [pick_precision("auto", d) for d in ("cpu", "cuda", "cuda:1")] == ["fp32", "bf16", "bf16"]
    assert pick_precision("bf16", "cpu") == "bf16" and pick_precision("fp32", "cuda") == "fp32"
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert pick_precision("auto", "cpu") == "bf16" and pick_precision("fp32", "cpu") == "fp32"


SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n"
NEOVERSE_V1 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd atomics\n"


@pytest.mark.parametrize("cpuinfo, env, has", [
    (SAPPHIRE_RAPIDS, {}, True), (ZEN4, {}, True), (NEOVERSE_V1, {}, True),
    (ZEN3, {}, False), (SKYLAKE, {}, False), (GRAVITON2, {}, False), ("", {}, False),
    (SAPPHIRE_RAPIDS, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),  # PINNED_ISA: standing in for a CPU without it
    (SAPPHIRE_RAPIDS, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, False),
    (SAPPHIRE_RAPIDS, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, True),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "ALL"}, True),
])
def test_precision_auto_picks_bf16_only_where_the_cpu_reports_it_in_hardware(cpuinfo, env, has):
    """bf16 under precision: auto needs the CPU's bf16 flag (/proc/cpuinfo: avx512_bf16 or
    amx_bf16 on x86, bf16 on Arm) and oneDNN allowed to use it (ONEDNN_MAX_CPU_ISA)."""
    from t2i.device import PINNED_ISA, cpu_has_bf16

    assert cpu_has_bf16(cpuinfo, env) is has
    assert cpu_has_bf16(SAPPHIRE_RAPIDS, PINNED_ISA) is False


@pytest.mark.parametrize("coef, term, params", [("int_coef", "int", {}), ("kl_coef", "kl", {"ca": True}),
                                                  ("ms_coef", "ms", {})])
def test_each_extra_term_enters_g_loss_with_its_weight(train_urls, coef, term, params):
    """GAN-INT, conditioning augmentation's KL and mode seeking add their own term to G's loss,
    weighted by their coefficient (these switches change the random draws too, so comparing
    weights could not tell a term that is ignored from one that is used)."""
    from t2i.data.loader import batches
    from t2i.gan import gan_step, model_config, step_inputs, trainables

    base = {**TINY, "int_coef": 0.0, "ms_coef": 0.0, **params}
    batch = next(batches(train_urls, 8))
    logs = {}
    for weight in (0.0, 0.5, 2.0):
        cfg = TrainParams(**{**base, coef: weight})
        torch.manual_seed(0)
        t = trainables(cfg, model_config(cfg, DATA.emb_dim, DATA.image_size))
        x = step_inputs(batch, cfg, torch.Generator().manual_seed(0))
        logs[weight] = gan_step(t, x, cfg)
    assert f"g_{term}" not in logs[0.0] and all(f"g_{term}" in logs[w] for w in (0.5, 2.0))
    for w in (0.5, 2.0):
        assert logs[w][f"g_{term}"] > 0
        others = sum(v for k, v in logs[w].items() if k.startswith("g_") and k != f"g_{term}")
        torch.testing.assert_close(logs[w]["loss_g"], others + w * logs[w][f"g_{term}"])


@pytest.mark.parametrize("options", [{}, {"ca": True, "ms_coef": 1.0}, {"augment": "color,translation,cutout", "ema": 0.9},
                                     {"r1_coef": 1.0, "spectral_norm": True, "g_upsample": "nearest", "d_head": "projection"},
                                     {"d_recon_coef": 1.0, "d_head": "projection", "g_turn": True}])
def test_resume_equals_uninterrupted(train_urls, tmp_path, options):
    train(train_urls, tmp_path / "full", checkpoint_every=2, **options)

    def crash(step: int, G, D) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_urls, tmp_path / "cut", checkpoint_every=2, on_step=crash, **options)
    assert not (tmp_path / "cut" / GENERATOR).exists()
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["step"] == 4
    summary = train(train_urls, tmp_path / "cut", checkpoint_every=2, **options)
    G, config = load_generator(tmp_path / "cut" / GENERATOR)
    assert G.cfg.ca == config["ca"] == options.get("ca", False)
    assert G.cfg.turn == config.get("g_turn", False) == options.get("g_turn", False)  # generate, serve, evaluate turn too
    assert summary["resumed"]
    assert same(weights(tmp_path / "full" / GENERATOR), weights(tmp_path / "cut" / GENERATOR))
    full = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=False)
    cut = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)
    assert same(full["D"], cut["D"]) and full["step"] == cut["step"]
    if options.get("ema"):
        extra = full["G_ema"].pop("_extra_state"), cut["G_ema"].pop("_extra_state")
        assert same(full["G_ema"], cut["G_ema"]) and extra[0] == extra[1] == {"updates": full["step"]}


def test_unresumable_checkpoint_is_reported_with_the_keys_that_differ(train_urls, tmp_path, capsys):
    train(train_urls, tmp_path, epochs=1)
    capsys.readouterr()
    assert not train(train_urls, tmp_path, epochs=1, lr=1e-3, seed=5)["resumed"]
    err = capsys.readouterr().err
    assert "not resuming" in err and "lr 0.0002 -> 0.001" in err and "seed 0 -> 5" in err


def test_precision_auto_keeps_the_precision_of_the_run_it_resumes(train_urls, tmp_path, capsys, monkeypatch):
    """auto picks fp32 on a CPU without bf16 for a new run, but a checkpoint trained in bf16 (as a
    run begun on CUDA would be) goes on in bf16 rather than starting over; another run's checkpoint
    does not lend its precision to a run that starts over."""
    from t2i import device

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)

    def crash(step: int, G, D) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_urls, tmp_path / "moved", checkpoint_every=2, precision="bf16", on_step=crash)
    assert train(train_urls, tmp_path / "moved", checkpoint_every=2, precision="auto")["resumed"]
    assert load_generator(tmp_path / "moved" / GENERATOR)[1]["precision"] == "bf16"
    train(train_urls, tmp_path / "other", epochs=1, precision="bf16")
    capsys.readouterr()
    assert not train(train_urls, tmp_path / "other", epochs=1, precision="auto", lr=1e-3)["resumed"]
    assert "lr 0.0002 -> 0.001" in capsys.readouterr().err
    assert load_generator(tmp_path / "other" / GENERATOR)[1]["precision"] == "fp32"


def test_logging_and_threads_do_not_block_a_resume(train_urls, tmp_path):
    train(train_urls, tmp_path, epochs=1)
    assert train(train_urls, tmp_path, epochs=1, log_every=3, threads=2)["resumed"]


def test_a_key_not_named_free_blocks_a_resume_even_one_added_later(train_urls, tmp_path):
    """Resume compares every stored key but FREE_ON_RESUME's: workers, precision and a key that a
    later version adds to the params all block, each named with its two values."""
    train(train_urls, tmp_path, epochs=1, precision="fp32")
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    config = dict(saved["config"])
    assert resume_blockers(saved, config) == []
    assert resume_blockers(saved, {**config, "epochs": 3, "log_every": 1, "threads": 4, "device": "cuda"}) == []
    assert resume_blockers(saved, {**config, "workers": 2}) == ["workers 0 -> 2"]
    assert resume_blockers(saved, {**config, "precision": "bf16"}) == ["precision 'fp32' -> 'bf16'"]
    assert resume_blockers(saved, {**config, "a_new_param": 1.0}) == ["a_new_param None -> 1.0"]
    dropped = {k: v for k, v in config.items() if k != "shuffle_buffer"}
    assert resume_blockers(saved, dropped) == ["shuffle_buffer 16 -> None"]


def test_raising_epochs_continues_a_finished_run(train_urls, tmp_path):
    """A finished 1-epoch run, continued to 2 epochs, ends with the weights of a fresh 2-epoch run."""
    train(train_urls, tmp_path / "fresh", epochs=2)
    train(train_urls, tmp_path / "grown", epochs=1)
    summary = train(train_urls, tmp_path / "grown", epochs=2)
    assert summary["resumed"] and summary["epochs"] == 2
    assert same(weights(tmp_path / "fresh" / GENERATOR), weights(tmp_path / "grown" / GENERATOR))


def test_nan_loss_stops_before_the_update_and_keeps_last_checkpoint(train_urls, tmp_path):
    """D's weights turn to NaN after step 2 (checkpointed): step 3's D loss stops the run."""
    def poison(step: int, G, D) -> None:
        if step == 2:
            for p in D.parameters():
                p.data.fill_(float("nan"))

    with pytest.raises(T2IError, match=r"non-finite loss at step 3 \(loss_d=nan\); stopped, last good checkpoint: "
                                       r".*checkpoint.pt \(step 2\)$"):
        train(train_urls, tmp_path, checkpoint_every=2, on_step=poison)
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for m in ("G", "D") for v in ckpt[m].values() if v.is_floating_point())


def test_nan_stop_never_names_an_old_runs_checkpoint(train_urls, tmp_path):
    train(train_urls, tmp_path, epochs=1)  # an old run's checkpoint, of other params

    def poison(step: int, G, D) -> None:
        for p in D.parameters():
            p.data.fill_(float("nan"))

    with pytest.raises(T2IError, match=r"non-finite loss at step 2 \(loss_d=nan\); stopped, no checkpoint of this run$"):
        train(train_urls, tmp_path, lr=1e-3, checkpoint_every=5, on_step=poison)


def test_batch_size_above_the_training_count_fails_before_anything_is_written(train_urls, tmp_path):
    with pytest.raises(T2IError, match=r"^batch_size=64 is more than the 32 training images$"):
        training_loop(train_urls, tmp_path / "out", TrainParams(**{**TINY, "batch_size": 64}),
                      data=DataSpec(16, 32, "bag-of-words", num_samples=32), live_dir=tmp_path / "logs")
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_the_last_step_is_logged_off_the_log_every_grid(train_urls, tmp_path):
    """dvc.yaml declares plots/ and metrics.json: a run shorter than log_every still writes both."""
    import json

    def rows(every: int) -> tuple[dict, dict, int]:
        logs = tmp_path / f"logs{every}"
        cfg = TrainParams(**{**TINY, "epochs": 1, "log_every": every})
        result = training_loop(train_urls, tmp_path / f"out{every}", cfg, data=DATA, live_dir=logs, progress=False)
        tsv = (logs / "plots" / "metrics" / "train" / "loss_d.tsv").read_text().splitlines()
        return result, json.loads((logs / "metrics.json").read_text()), len(tsv) - 1  # less the header

    result, summary, logged = rows(1000)  # off the grid: only the last step
    assert logged == 1 and summary["step"] == result["steps"] > 1 and summary["train"]["epoch"] == 0
    assert summary["train"]["loss_d"] == pytest.approx(result["loss_d"])
    result, summary, logged = rows(1)  # on the grid: every step once, the last not twice
    assert logged == result["steps"] == summary["step"]


def test_a_failing_run_leaves_the_previous_logs(train_urls, tmp_path):
    logs = tmp_path / "logs"
    training_loop(train_urls, tmp_path / "out", TrainParams(**{**TINY, "epochs": 1, "log_every": 1}), data=DATA, live_dir=logs,
                  progress=False)
    before = sorted(str(p.relative_to(logs)) for p in logs.rglob("*"))
    assert any(name.endswith(".tsv") for name in before)
    bad = Path(train_urls[0]).parent / "missing-shard.tar"
    with pytest.raises(T2IError, match="missing-shard.tar"):
        training_loop([str(bad)], tmp_path / "out", TrainParams(**{**TINY, "lr": 1e-3}), data=DATA, live_dir=logs,
                      progress=False)
    assert sorted(str(p.relative_to(logs)) for p in logs.rglob("*")) == before


def test_ctrl_c_says_where_to_resume(train_urls, tmp_path, capsys):
    def interrupt(step: int, G, D) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(train_urls, tmp_path, checkpoint_every=2, on_step=interrupt)
    assert capsys.readouterr().err.strip().splitlines()[-1] == "train: interrupted at step 3; rerun to resume from step 2"


def test_pick_wrong_class_picks_another_class():
    g = torch.Generator().manual_seed(0)
    cls = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    for _ in range(20):
        j = pick_wrong_class(cls, g)
        assert (cls[j] != cls).all()
    one_class = pick_wrong_class(torch.zeros(4, dtype=torch.long), g)
    assert (one_class != torch.arange(4)).all()


def test_caption_picks_are_distinct():
    g = torch.Generator().manual_seed(0)
    every = pick_captions(3, 10, 10, g)
    assert (every.sort(dim=1).values == torch.arange(10)).all()
    one = pick_captions(3, 10, 1, g)
    assert one.shape == (3, 1) and ((one >= 0) & (one <= 9)).all()


def test_load_generator_errors(tmp_path):
    with pytest.raises(T2IError, match="missing generator checkpoint"):
        load_generator(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(T2IError, match="bad.pt"):
        load_generator(tmp_path / "bad.pt")


def test_rerun_of_a_finished_run_keeps_its_checkpoint(train_urls, tmp_path):
    train(train_urls, tmp_path, epochs=1)
    before = (tmp_path / CHECKPOINT).read_bytes()
    summary = train(train_urls, tmp_path, epochs=1)
    assert summary["resumed"] and (tmp_path / CHECKPOINT).read_bytes() == before


def test_channels_last_trains_to_the_same_kind_of_generator(train_urls, tmp_path):
    """NHWC is a layout, not a model: the saved generator loads as usual and draws finite images."""
    train(train_urls, tmp_path, epochs=1, channels_last=True, precision="bf16")
    G, config = load_generator(tmp_path / GENERATOR)
    assert config["channels_last"] and config["precision"] == "bf16"
    images = G(torch.randn(4, G.cfg.z_dim), torch.randn(4, G.cfg.emb_dim))
    assert images.shape == (4, 3, 32, 32) and torch.isfinite(images).all()


def test_training_streams_shards_over_http(train_urls, tmp_path):
    """The same shards served by an HTTP server (object storage, a web mirror) train the same weights."""
    from tests.httpserver import serve

    folder = Path(train_urls[0]).parent
    train(train_urls, tmp_path / "local", epochs=1)
    with serve(folder) as server:
        remote = [f"{server.url}/{Path(u).name}" for u in train_urls]
        train(remote, tmp_path / "http", epochs=1)
        assert {r.path for r in server.requests} == {f"/{Path(u).name}" for u in train_urls}
    assert same(weights(tmp_path / "local" / GENERATOR), weights(tmp_path / "http" / GENERATOR))


def test_training_streams_shards_from_a_pipe_command(train_urls, tmp_path):
    """``pipe:`` URLs (e.g. ``pipe:aws s3 cp s3://bucket/shard.tar -``) train the same weights."""
    train(train_urls, tmp_path / "local", epochs=1)
    train([f"pipe:cat {u}" for u in train_urls], tmp_path / "pipe", epochs=1)
    assert same(weights(tmp_path / "local" / GENERATOR), weights(tmp_path / "pipe" / GENERATOR))


@pytest.mark.slow
def test_compiled_step_trains_like_the_eager_one(train_urls, tmp_path):
    """train.compile wraps G and D in torch.compile; the saved weights stay plain, loadable and
    close to eager training's (in fp32: under bf16, which auto picks on some CPUs, compiled and
    eager kernels round differently)."""
    train(train_urls, tmp_path / "eager", epochs=1, precision="fp32")
    train(train_urls, tmp_path / "compiled", epochs=1, compile=True, precision="fp32")
    G, config = load_generator(tmp_path / "compiled" / GENERATOR)
    assert config["compile"]
    eager, compiled = weights(tmp_path / "eager" / GENERATOR), weights(tmp_path / "compiled" / GENERATOR)
    assert eager.keys() == compiled.keys()  # no _orig_mod. prefixes
    assert all(torch.allclose(eager[k].float(), compiled[k].float(), atol=1e-3) for k in eager)


def test_a_second_trainer_on_the_same_folder_is_refused(train_urls, tmp_path):
    from t2i.io import sole_writer

    with sole_writer(tmp_path / "ckpt", "t2i train"):  # as a running `t2i train` holds it
        with pytest.raises(T2IError, match=rf"^{tmp_path / 'ckpt'} is in use by t2i train \(pid {os.getpid()}\); "):
            training_loop(train_urls, tmp_path / "out", TrainParams(**TINY), data=DATA, checkpoint_dir=tmp_path / "ckpt",
                          live_dir=tmp_path / "logs", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()
    training_loop(train_urls, tmp_path / "out", TrainParams(**TINY), data=DATA, checkpoint_dir=tmp_path / "ckpt",
                  progress=False)  # released: trains


@pytest.mark.parametrize("lever", ["r1_coef", "ground_d_coef", "d_recon_coef"])
def test_a_lever_outside_ds_forward_is_refused_under_torchrun(lever, monkeypatch, tmp_path):
    """A run already under torchrun (world > 1, nproc_per_node 1) refuses the levers that work
    outside D's one forward call, naming the lever, before it builds anything."""
    from t2i import T2IError
    from t2i import train as train_module

    monkeypatch.setattr(train_module, "init", lambda device: (0, 2, "cpu"))
    with pytest.raises(T2IError, match=f"train.{lever}: not under torchrun"):
        training_loop([], tmp_path, TrainParams(**{**TINY, lever: 1.0}), data=DATA, progress=False)
    assert not any(tmp_path.iterdir())
