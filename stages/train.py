"""``t2i train``: the ``train.arch`` family on the embedded shards -> data/models/<dataset>/generator.pt."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import typer

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.paths import Artifacts
from t2i.data.shards import read_manifest


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Train (resuming from data/checkpoints/<dataset> when the params are unchanged); with
    train.nproc_per_node > 1, as that many torchrun processes."""
    p = params(params_file, overrides)
    if p.train.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        raise typer.Exit(torchrun(p.train.nproc_per_node, params_file, overrides, data))
    from t2i.data.loader import batches, embedded_urls
    from t2i.gan import needs_grounding
    from t2i.train import DataSpec, training_loop

    at = Artifacts(data, p.dataset)
    src = at.embeddings
    manifest = read_manifest(src)
    urls = embedded_urls(src, "train")
    show = "test" if "test" in manifest["splits"] else "train"  # grid captions: unseen ones if any
    fixed = next(batches(embedded_urls(src, show), 8, drop_last=False))
    probe = epoch_probe(src, p.train.batch_size, p.train.z_dim)
    ground = None
    if needs_grounding(p.train):  # train.text: grounded, train.match_coef or train.ground_d_coef
        from t2i.ground import load_grounding

        ground = load_grounding(at.grounding)
    attributes = oracle = None
    if p.train.ac_coef > 0 or p.train.text == "oracle":  # every attribute value of the training samples
        from t2i.named import discover_attributes

        attributes = discover_attributes([m for b in batches(urls, 256, drop_last=False) for m in b["meta"]])
    if p.train.text == "oracle":  # the grids' and the probe's captions, as the oracle codes them
        from t2i.oracle import head_for

        oracle = head_for(src, attributes, show)
    with Timer() as t:
        summary = training_loop(
            urls, at.models, p.train,
            data=DataSpec(emb_dim=manifest["emb_dim"], image_size=manifest["image_size"],
                          text_model=manifest["text_model"], num_samples=manifest["splits"]["train"]["count"],
                          attributes=attributes),
            checkpoint_dir=at.checkpoints, live_dir=at.train_logs,
            sample_emb=fixed["emb"][:, 0], sample_captions=[c[0] for c in fixed["captions"]], probe=probe,
            ground=ground, oracle=oracle,
        )
    how = "resumed, " if summary["resumed"] else ""
    if os.environ.get("RANK", "0") == "0":  # under torchrun: one summary, not one per process
        done("train", t.seconds, f"{how}{summary['steps']} steps, {summary['epochs']} epochs -> {at.models}")


def epoch_probe(src: Path, batch_size: int, z_dim: int):
    """What D checks and G draws, for the loop to log after every epoch, where the embedder wrote
    attribute probes (else None): ``t2i.probes.caption_check`` of D on the real test images as
    ``d_check/<attribute>``, and ``t2i.outline.outline_check`` of G with fixed noise as
    ``silhouette/<reading>``."""
    import torch

    from t2i import probes
    from t2i.data.loader import batches, embedded_urls, to_float
    from t2i.outline import outline_check

    found = probes.load_probes(src)
    if found is None:
        return None
    test = list(batches(embedded_urls(src, "test"), 256, drop_last=False))
    images = to_float(torch.cat([b["image"] for b in test]))  # (N, 3, S, S)
    keys = [k for b in test for k in b["key"]]
    z = torch.randn(len(found["g_check"]["seen"]["emb"]), z_dim,
                    generator=torch.Generator().manual_seed(probes.SEED))  # (256, z_dim): the same every epoch

    def probe(G: torch.nn.Module, D: torch.nn.Module) -> dict[str, float]:
        device = next(D.parameters()).device
        checked = probes.caption_check(D, images, found, keys, batch_size, device)
        drawn = outline_check(G, found, z, batch_size, device)
        return {**{f"d_check/{k}": v for k, v in checked.items()}, **{f"silhouette/{k}": v for k, v in drawn.items()}}

    return probe


def torchrun(nproc: int, params_file: Path, overrides: list[str] | None, data: Path) -> int:
    """Run this stage again as ``nproc`` torchrun processes on this machine (``--standalone``),
    or, with $T2I_TORCHRUN set (e.g. "--nnodes 2 --rdzv-backend c10d --rdzv-endpoint host:29500
    --rdzv-id run1"; docs/gpu.md), as this machine's share of a multi-node run; returns its exit code."""
    where = shlex.split(os.environ.get("T2I_TORCHRUN", "")) or ["--standalone"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={nproc}",
           "-m", "stages.cli", "train", "--params", str(params_file), "--data", str(data),
           *(a for o in overrides or [] for a in ("-S", o))]
    typer.echo(f"train: torchrun {shlex.join(cmd[3:])}", err=True)
    return subprocess.run(cmd).returncode
