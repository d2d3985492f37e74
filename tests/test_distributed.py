"""DDP via torchrun (gloo on CPU): each rank reads its own shards, ranks stay in sync after every
step, only rank 0 writes, and an interrupted two-rank run resumes to the same weights."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from t2i.data.loader import Loader, stream
from tests.conftest import free_port
from tests.test_train import DATA, TINY

NUM_SAMPLES = 32  # the train_urls fixture: 32 training flowers in 3 shards (12, 12, 8)


def keys(urls, n=None, **kw) -> list[str]:
    return [s["key"] for s in itertools.islice(stream(urls, **kw), n)]


def test_ranks_read_disjoint_shards_cycled_to_equal_length(train_urls):
    assert len(train_urls) == 3
    shard_of = {k: url for url in train_urls for k in keys([url])}
    per_rank = [keys(train_urls, 40, rank=r, world=2, shuffle=8, seed=3, repeat=True) for r in (0, 1)]
    shards = [{shard_of[k] for k in ks} for ks in per_rank]
    assert not shards[0] & shards[1]  # whole shards per rank
    assert shards[0] | shards[1] == set(train_urls)
    assert all(len(ks) == 40 for ks in per_rank)  # more than either rank holds: cycled, never short
    assert keys(train_urls, 40, rank=0, world=2, shuffle=8, seed=3, repeat=True) == per_rank[0]  # deterministic


def test_too_few_shards_fall_back_to_disjoint_sample_slices(train_urls):
    per_rank = [keys(train_urls, rank=r, world=4, shuffle=8, seed=3) for r in range(4)]  # 3 shards < 4 ranks
    everything = keys(train_urls)
    assert sorted(k for ks in per_rank for k in ks) == sorted(everything)
    assert max(map(len, per_rank)) - min(map(len, per_rank)) <= 1


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_takes_the_intended_steps_when_slices_split_unevenly(train_urls, world):
    """3 shards of 12, 12 and 8 samples, too few for world x 2 workers: the ranks read sample
    slices, and each worker drops its own partial batch. One pass leaves ranks short by different
    amounts (at world 2, 4 and 3 batches: under DDP rank 0's 4th step would wait forever for
    rank 1); with ``steps`` every rank takes exactly the intended number."""
    batch, workers = 4, 2
    steps = NUM_SAMPLES // world // batch
    one_pass = [len(list(Loader(train_urls, batch, shuffle=8, seed=3, workers=workers, rank=r, world=world).epoch(0)))
                for r in range(world)]
    if world == 2:
        assert one_pass == [4, 3]  # the hang this guards against
    for r in range(world):
        loader = Loader(train_urls, batch, shuffle=8, seed=3, workers=workers, rank=r, world=world, steps=steps)
        for epoch in (0, 1):
            got = list(loader.epoch(epoch))
            assert len(got) == steps and all(len(b["key"]) == batch for b in got)


def test_loader_workers_persist_across_epochs_and_keep_each_epochs_order(train_urls):
    loader = Loader(train_urls, 4, shuffle=8, seed=3, workers=2, steps=8)
    first = [b["key"] for b in loader.epoch(0)]
    workers = [w.pid for w in loader.dataloader._iterator._workers]
    second = [b["key"] for b in loader.epoch(1)]
    assert [w.pid for w in loader.dataloader._iterator._workers] == workers  # the same processes
    assert second != first
    assert [b["key"] for b in Loader(train_urls, 4, shuffle=8, seed=3, workers=2, steps=8).epoch(1)] == second
    again = [b["key"] for b in loader.epoch(0)]
    assert again == first  # an epoch's order depends on (seed, epoch) alone: what a resume replays


SCRIPT = """
import hashlib, os, sys, torch
from t2i.params import TrainParams
from t2i.train import DataSpec, training_loop

out, epochs, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rank = os.environ["RANK"]

def digest(tensors):
    return hashlib.sha256(b"".join(t.detach().contiguous().numpy().tobytes() for t in tensors)).hexdigest()

def on_step(step, G, D):  # every rank records its parameters (and buffers, after a checkpoint)
    with open(os.path.join(out, f"rank{{rank}}.log"), "a") as f:
        f.write(f"{{step}} {{digest(list(G.parameters()) + list(D.parameters()))}} "
                f"{{digest(list(G.buffers()) + list(D.buffers()))}}\\n")
    if step == stop:
        sys.exit(3)  # interrupted after this step's checkpoint

data = DataSpec(emb_dim={emb_dim}, image_size={image_size}, text_model="bow", num_samples={num_samples})
params = {{**{tiny}, "epochs": epochs, "checkpoint_every": 1}}
training_loop({urls!r}, os.path.join(out, "model"), TrainParams(**params), data=data, on_step=on_step,
              progress=False)
"""


def torchrun(script: Path, out: Path, epochs: int, stop: int = 0) -> subprocess.CompletedProcess:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(script), str(out), str(epochs), str(stop)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def log(out: Path, rank: int) -> list[list[str]]:
    return [line.split() for line in (out / f"rank{rank}.log").read_text().splitlines()]


@pytest.fixture
def script(train_urls, tmp_path) -> Path:
    path = tmp_path / "run.py"
    path.write_text(textwrap.dedent(SCRIPT.format(emb_dim=DATA.emb_dim, image_size=DATA.image_size,
                                                  num_samples=NUM_SAMPLES, tiny=TINY, urls=train_urls)))
    return path


@pytest.mark.slow
def test_two_ranks_stay_in_sync_and_resume_exactly(script, tmp_path):
    steps = 2 * (NUM_SAMPLES // 2 // TINY["batch_size"])  # 2 epochs x 2 steps per rank
    fresh = tmp_path / "fresh"
    r = torchrun(script, fresh, epochs=2)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = log(fresh, 0), log(fresh, 1)
    assert [int(s) for s, _, _ in r0] == list(range(1, steps + 1))
    assert r0 == r1  # identical parameters and (averaged at each checkpoint) BatchNorm buffers
    assert sorted(p.name for p in (fresh / "model").iterdir()) == ["checkpoint.pt", "generator.pt"]
    ckpt = torch.load(fresh / "model" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["world_size"] == 2 and ckpt["step"] == steps
    assert len(ckpt["rng_ranks"]) == 2 and not torch.equal(*ckpt["rng_ranks"])  # each rank's own stream

    # Interrupted after step 3 (mid-epoch), then rerun: both ranks resume from their saved streams.
    broken = tmp_path / "broken"
    r = torchrun(script, broken, epochs=2, stop=3)
    assert r.returncode != 0
    r = torchrun(script, broken, epochs=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert log(broken, 0)[-1] == log(fresh, 0)[-1] and log(broken, 1)[-1] == log(fresh, 1)[-1]
    g_fresh, g_resumed = (torch.load(d / "model" / "generator.pt", weights_only=True)["state_dict"]
                          for d in (fresh, broken))
    assert all(torch.equal(g_fresh[k], g_resumed[k]) for k in g_fresh)




@pytest.mark.slow
def test_df_gan_with_ma_gp_trains_under_ddp(train_urls, tmp_path):
    """MA-GP's double backward inside DDP's forward: both ranks finish every step and stay identical."""
    df = {**TINY, "arch": "df-gan", "df_gan": {"ngf": 4, "ndf": 4}}
    path = tmp_path / "run.py"
    path.write_text(textwrap.dedent(SCRIPT.format(emb_dim=DATA.emb_dim, image_size=DATA.image_size,
                                                  num_samples=NUM_SAMPLES, tiny=df, urls=train_urls)))
    out = tmp_path / "df"
    r = torchrun(path, out, epochs=2)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = log(out, 0), log(out, 1)
    assert len(r0) == 2 * (NUM_SAMPLES // 2 // TINY["batch_size"]) and r0 == r1
    config = torch.load(out / "model" / "generator.pt", weights_only=True)["config"]
    assert config["arch"] == "df-gan" and config["world_size"] == 2


@pytest.mark.slow
def test_the_shared_terms_train_under_ddp(train_urls, tmp_path):
    """Hard wrong captions and AC-GAN's heads (D's, used on D's features after DDP's forward):
    both ranks finish every step with identical weights, heads included."""
    levers = {**TINY, "wrong": "hard", "ac_coef": 0.5, "d_contrast_coef": 0.5}
    attrs = ("from t2i.data.loader import batches\nfrom t2i.named import discover_attributes\n"
             f"ATTRS = discover_attributes([m for b in batches({train_urls!r}, 64, drop_last=False) for m in b['meta']])\n")
    path = tmp_path / "run.py"
    path.write_text(attrs + textwrap.dedent(SCRIPT.format(emb_dim=DATA.emb_dim, image_size=DATA.image_size,
                                                          num_samples=NUM_SAMPLES, tiny=levers, urls=train_urls))
                    .replace('text_model="bow",', 'text_model="bow", attributes=ATTRS,'))
    out = tmp_path / "levers"
    r = torchrun(path, out, epochs=1)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = log(out, 0), log(out, 1)
    assert len(r0) == NUM_SAMPLES // 2 // TINY["batch_size"] and r0 == r1
    ckpt = torch.load(out / "model" / "checkpoint.pt", weights_only=False)
    assert any(k.startswith("attribute_heads.") for k in ckpt["D"]) and ckpt["config"]["wrong"] == "hard"


SYNC_BN = """
import os, sys, torch
import torch.distributed as dist
from t2i.distributed import SyncBatchNorm

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
x_all = torch.randn(6, 3, 4, 4) * 3 + 1  # the global batch; rank r holds rows 2r .. 2r+1 (uneven values)
w_all = torch.randn(6, 3, 4, 4)  # a fixed loss weight per element
bn = SyncBatchNorm(3)
with torch.no_grad():
    bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0])), bn.bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
x = x_all[2 * rank:2 * rank + 2].clone().requires_grad_()
y = bn(x)
(y * w_all[2 * rank:2 * rank + 2]).sum().backward()
torch.save({{"y": y.detach(), "dx": x.grad, "dw": bn.weight.grad, "state": bn.state_dict()}},
           os.path.join(sys.argv[1], f"rank{{rank}}.pt"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_sync_batchnorm_over_gloo_matches_batchnorm_on_the_global_batch(tmp_path):
    """Three gloo ranks, each with 2 of the global batch's 6 images: outputs, input gradients
    and running stats equal plain BatchNorm on the whole batch; parameter gradients summed over
    ranks equal the whole batch's."""
    path = tmp_path / "sync_bn.py"
    path.write_text(SYNC_BN.format())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=3",
                        f"--master_port={free_port()}", str(path), str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [torch.load(tmp_path / f"rank{i}.pt") for i in range(3)]

    torch.manual_seed(0)
    x_all = (torch.randn(6, 3, 4, 4) * 3 + 1).requires_grad_()
    w_all = torch.randn(6, 3, 4, 4)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0])), bn.bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
    y = bn(x_all)
    (y * w_all).sum().backward()
    close = dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat([g["y"] for g in got]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([g["dx"] for g in got]), x_all.grad, **close)
    torch.testing.assert_close(sum(g["dw"] for g in got), bn.weight.grad, **close)
    for g in got:
        assert g["state"].keys() == bn.state_dict().keys()
        for k in ("running_mean", "running_var"):
            torch.testing.assert_close(g["state"][k], getattr(bn, k), **close)


TEARDOWN = """
import atexit, os, sys
import torch.distributed as dist
from t2i.distributed import init

# Registered first, so it runs last at exit: after whatever t2i registered.
atexit.register(lambda: open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}"), "w").write(
    "closed" if not dist.is_initialized() else "open"))
print(init("cpu"))
"""


def test_the_process_group_t2i_opens_is_closed_before_the_interpreter_exits(tmp_path):
    """Left open at exit, gloo's threads can abort a finished run (SIGABRT, "terminate called
    without an active exception": 1 in 25 runs of the SyncBatchNorm script here)."""
    path = tmp_path / "teardown.py"
    path.write_text(TEARDOWN)
    r = torchrun(path, tmp_path, epochs=0)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(tmp_path / f"rank{i}").read_text() for i in (0, 1)] == ["closed", "closed"]


@pytest.mark.slow
def test_resume_on_another_world_size_says_what_changes(script, train_urls, tmp_path, capsys):
    """Two ranks stop mid-epoch 2 (step 3 of 2 x 2); one process resumes: same weights and
    optimisers, the global batch halves (said so), and the epoch goes on after the samples done."""
    from t2i.params import TrainParams
    from t2i.train import DataSpec, training_loop

    out = tmp_path / "two"
    assert torchrun(script, out, epochs=2, stop=3).returncode != 0
    data = DataSpec(emb_dim=DATA.emb_dim, image_size=DATA.image_size, text_model="bow", num_samples=NUM_SAMPLES)
    summary = training_loop(train_urls, out / "model", TrainParams(**{**TINY, "epochs": 2, "checkpoint_every": 1}),
                            data=data, progress=False)
    err = capsys.readouterr().err
    assert summary["resumed"] and "written by 2 processes) on 1" in err and "from 16 to 8 images per step" in err
    per_epoch = NUM_SAMPLES // TINY["batch_size"]
    assert summary["steps"] == 3 + (per_epoch - 2)  # epoch 2: 16 of its 32 samples were done, 2 batches of 8
    ckpt = torch.load(out / "model" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["world_size"] == 1 and ckpt["epoch"] == 2
