"""`t2i bench` on tiny inputs: every row is measured, positive and printed (speed targets are
figures the command prints, not assertions here)."""

import pytest

from t2i import bench
from t2i.params import PLAIN, GroundParams, TrainParams

TINY = TrainParams(ngf=8, ndf=8, z_dim=8, proj_dim=8, batch_size=8, threads=1, shuffle_buffer=16)  # the default levers
GROUND = GroundParams(dim=8, hidden=16, width=8, glimpses=2)  # the shape of their stand-in grounding


@pytest.mark.slow
def test_rows_are_measured(train_urls):
    r = bench.run(TINY, urls=train_urls, emb_dim=16, image_size=32, seconds=0.2, ground=GROUND)
    t = r["train"]
    assert t["levers"] == {"text": "grounded", "match_coef": 1.0, "d_contrast_coef": 1.0, "d_head": "projection",
                           "ema": 0.999, "augment": "translation,cutout"}
    assert t["img_s"] > 0 and t["wide_img_s"] > 0 and t["peak_share"] > 0  # no upper bound: load skews it
    assert t["fp32_eager_img_s"] > 0 and t["speedup"] > 0 and t["wide_speedup"] > 0
    assert t["wide_flops_per_img"] > 10 * t["flops_per_img"] > 0  # width 64 vs 8: far more work
    assert r["load"]["batches_s"] > 0 and r["load"]["ratio"] > 0
    sh = r["shards"]  # its own fixed-batch figure, timed in the same rounds as the step fed from the shards
    assert sh["img_s"] > 0 and sh["fixed_batch_img_s"] > 0 and sh["ratio"] == sh["img_s"] / sh["fixed_batch_img_s"]
    assert r["shard"]["img_s"] > 0 and r["memory"]["peak_rss_mib"] > 50
    text = bench.table(r)
    assert [line.split()[0] for line in text.splitlines()] == ["train", "family", "shards", "load", "shard", "memory"]
    assert ("(text=grounded match_coef=1.0 d_contrast_coef=1.0 d_head=projection ema=0.999 augment=translation,cutout)"
            in text.splitlines()[0])


@pytest.mark.slow
def test_both_families_are_measured():
    cfg = TINY.model_copy(update={"df_gan": TINY.df_gan.model_copy(update={"ngf": 8, "ndf": 8})})
    f = bench.run(cfg, image_size=32, emb_dim=16, seconds=0.2, ground=GROUND)["family"]
    assert f["gan-cls"]["img_s"] > 0 and f["df-gan"]["img_s"] > 0
    # same widths: DF-GAN's 3x3 convolutions and MA-GP's double backward cost more per image
    assert f["df-gan"]["flops_per_img"] > 1.5 * f["gan-cls"]["flops_per_img"] > 0
    df = bench.run(cfg.with_arch("df-gan", **PLAIN), image_size=32, emb_dim=16, seconds=0.2)["train"]
    assert df["levers"] == {}  # the plain recipe: no grounding
    assert df["arch"] == "df-gan" and df["ngf"] == 8 and df["wide_flops_per_img"] > 10 * df["flops_per_img"]


def test_embed_row_compares_with_plain_encode():
    captions = [f"a flower with {n} petals" for n in range(20)] * 3  # 20 distinct of 60
    e = bench.embed_rate(captions)
    assert e["distinct"] == 20 and e["captions"] == 60
    assert e["min_cosine"] > 0.99 and e["captions_s"] > 0 and e["plain_captions_s"] > 0
    assert e["precision"] == "fp64" and e["fp32_plain_captions_s"] > 0


@pytest.mark.slow
def test_compile_rates_time_eager_and_each_compile_mode():
    """What the GPU check measures for torch.compile's modes, run here on a tiny step (on the CPU,
    reduce-overhead has no CUDA graphs to capture and compiles like the default mode)."""
    from t2i.bench import compile_rates

    cfg = TrainParams(ngf=4, ndf=4, z_dim=8, proj_dim=8, batch_size=4, threads=1)
    r = compile_rates(cfg, image_size=32, emb_dim=8, seconds=0.05, modes=("reduce-overhead",), ground=GROUND)
    assert r.keys() == {"eager", "reduce-overhead", "reduce-overhead_compile_s"}
    assert r["eager"] > 0 and r["reduce-overhead"] > 0 and r["reduce-overhead_compile_s"] > 0
