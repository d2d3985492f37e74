"""DDP via torchrun (gloo on CPU): disjoint data slices, ranks stay in sync, only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from t2i.data.loader import batches
from tests.test_train import DATA, TINY


def test_rank_slices_are_disjoint_and_complete(train_urls):
    keys = [[k for b in batches(train_urls, 1, rank=r, world=2, shuffle=8, seed=3) for k in b["key"]] for r in (0, 1)]
    everything = [k for b in batches(train_urls, 1) for k in b["key"]]
    assert not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == sorted(everything)
    assert abs(len(keys[0]) - len(keys[1])) <= 1


def test_torchrun_two_ranks(train_urls, tmp_path):
    steps = 2 * (32 // 2 // TINY["batch_size"])  # 2 epochs x 2 steps per rank
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from t2i.params import TrainParams
        from t2i.train import DataSpec, training_loop

        def keep(step, G, D):  # each rank saves its own weights after its last step
            if step == {steps}:
                torch.save({{**dict(G.named_parameters()), **{{"D." + k: v for k, v in D.named_parameters()}}}},
                           os.path.join({str(tmp_path)!r}, "rank" + os.environ["RANK"] + ".pt"))

        data = DataSpec(emb_dim={DATA.emb_dim}, image_size={DATA.image_size}, text_model="bow", num_samples=32)
        training_loop({train_urls!r}, {str(tmp_path / "out")!r}, TrainParams(**{TINY!r}), data=data, on_step=keep,
                      progress=False)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531", str(script)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "generator.pt"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["world_size"] == 2
    assert ckpt["step"] == steps
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0.keys() == r1.keys()
    assert all(torch.allclose(r0[k].float(), r1[k].float(), atol=1e-6) for k in r0)  # averaged gradients

