"""GAN-CLS training loop (Reed et al. 2016): one function with defaulted keyword arguments.

Each step reads as (1) update D, (2) update G. Checkpoints hold G, D, both optimizers, the step
counters, the RNG state and the resolved config; a rerun with the same config resumes from the
last one and, on CPU, ends with exactly the weights an uninterrupted run would have.
"""

from __future__ import annotations

import csv
import itertools
import os
import pickle
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from t2i import T2IError
from t2i.data.loader import batches, to_float
from t2i.io import atomic_file, save_torch
from t2i.losses import discriminator_loss, generator_loss, interpolate_embeddings
from t2i.models import Generator, ModelConfig, build_models

CHECKPOINT = "checkpoint.pt"
GENERATOR = "generator.pt"


def pick_caption_embeddings(emb: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """(B, C, D) caption embeddings -> (B, D): the mean of ``k`` distinct random captions each."""
    B, C, _ = emb.shape
    idx = torch.rand(B, C, generator=g).argsort(dim=1)[:, :k]  # (B, k)
    return emb[torch.arange(B)[:, None], idx].mean(dim=1)


def mismatched(class_id: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """For each item, the index of a random other item of a different class (GAN-CLS "wrong text")."""
    B = class_id.numel()
    other = (class_id[:, None] != class_id[None, :]).float()  # (B, B)
    lonely = other.sum(dim=1) == 0  # a batch of one class: fall back to any other item
    other[lonely] = 1.0 - torch.eye(B)[lonely] if B > 1 else 1.0
    return torch.multinomial(other, 1, generator=g).squeeze(1)


def save_generator(path: Path, G: Generator, config: dict) -> None:
    save_torch({"config": config, "state_dict": G.state_dict()}, path)


def load_generator(path: Path, device: str = "cpu") -> tuple[Generator, dict]:
    """The final generator (eval mode) and the training config stored with it."""
    path = Path(path)
    if not path.is_file():
        raise T2IError(f"missing generator checkpoint {path}: run the train stage first")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        config = blob["config"]
        G = Generator(ModelConfig(**config["model"]))
        G.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise T2IError(f"cannot read generator checkpoint {path}: {str(e).splitlines()[0]}") from None
    return G.to(device).eval(), config


def init_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) under torchrun; (0, 1, device) in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return dist.get_rank(), world, device


def average(tensors: list[torch.Tensor], world: int) -> None:
    """All-reduce mean in place (gradients after backward, BN statistics before saving)."""
    if world > 1:
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t)
            t.div_(world)


def _trim_log(live_dir: Path, step: int) -> None:
    """Drop logged rows after ``step`` (written after the checkpoint a resume starts from)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if rows:
            col = rows[0].index("step")
            keep = [rows[0]] + [r for r in rows[1:] if int(r[col]) <= step]
            with open(tsv, "w", newline="") as f:
                csv.writer(f, delimiter="\t", lineterminator="\n").writerows(keep)


def training_loop(
    train_urls: list[str],
    out_dir: Path,
    *,
    num_samples: int | None = None,
    checkpoint_dir: Path | None = None,
    live_dir: Path | None = None,
    emb_dim: int = 384,
    image_size: int = 64,
    text_model: str = "all-MiniLM-L6-v2",
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-4,
    beta1: float = 0.5,
    beta2: float = 0.999,
    z_dim: int = 100,
    proj_dim: int = 128,
    ngf: int = 64,
    ndf: int = 64,
    cls: bool = True,
    int_coef: float = 1.0,
    int_beta: float = 0.5,
    l1_coef: float = 0.0,
    fm_coef: float = 0.0,
    label_smoothing: float = 0.0,
    captions_per_step: int = 1,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    threads: int = 0,
    workers: int = 0,
    checkpoint_every: int = 200,
    log_every: int = 10,
    sample_captions: list[str] | None = None,
    sample_emb: torch.Tensor | None = None,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train G and D on embedded shards; write ``generator.pt`` to ``out_dir``; return a summary.

    ``sample_emb`` (N, D) with ``sample_captions`` gives the fixed captions of the per-epoch
    sample grids (with fixed noise). ``on_step(step)`` is called after every step.

    Under torchrun each rank trains on its own slice of every epoch (``num_samples``, the
    training-set size, is then required so that all ranks take the same number of steps);
    gradients are averaged across ranks and only rank 0 writes.
    """
    # The resolved config: every scalar argument, as given (a resume needs all of them unchanged).
    config = {k: v for k, v in locals().items()
              if isinstance(v, (int, float, str, bool)) and k not in ("progress", "checkpoint_every")}
    from t2i.text import pick_device

    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir or out_dir)
    rank, world, device = init_distributed(pick_device(device))
    if world > 1 and not num_samples:
        raise T2IError("distributed training needs num_samples (the training-set size)")
    limit = num_samples // world // batch_size if world > 1 else None  # steps per epoch, all ranks
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        model_cfg = ModelConfig(emb_dim=emb_dim, z_dim=z_dim, proj_dim=proj_dim, ngf=ngf, ndf=ndf, image_size=image_size)
    except ValueError as e:
        raise T2IError(f"cannot train on these shards: {e}") from None
    config["model"] = asdict(model_cfg)
    config["world_size"] = world

    torch.manual_seed(seed)
    G, D = build_models(model_cfg)
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(beta1, beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(beta1, beta2))
    g = torch.Generator().manual_seed(seed + 100_003 * rank)  # every random draw of the loop
    fixed_z = torch.randn(64, z_dim, generator=torch.Generator().manual_seed(seed + 1))
    step, epoch, step_in_epoch = 0, 0, 0

    ckpt_path = checkpoint_dir / CHECKPOINT
    resumed = False
    if ckpt_path.is_file():
        try:
            blob = torch.load(ckpt_path, map_location=device, weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
            raise T2IError(f"cannot read checkpoint {ckpt_path} ({e}); delete it to start over") from None
        if blob.get("config") == config:
            G.load_state_dict(blob["G"]), D.load_state_dict(blob["D"])
            opt_g.load_state_dict(blob["opt_g"]), opt_d.load_state_dict(blob["opt_d"])
            if rank == 0:
                g.set_state(blob["rng"])
            else:  # other ranks' streams are not saved: reseed them deterministically
                g.manual_seed(seed + 100_003 * rank + blob["step"])
            step, epoch, step_in_epoch = blob["step"], blob["epoch"], blob["step_in_epoch"]
            resumed = True
    if rank != 0:
        live_dir, sample_emb, progress = None, None, False  # only rank 0 writes
    if live_dir is not None:
        live_dir = Path(live_dir)
        if resumed:
            _trim_log(live_dir, step)
        else:
            shutil.rmtree(live_dir, ignore_errors=True)

    def checkpoint() -> None:
        average([b for m in (G, D) for b in m.buffers() if b.is_floating_point()], world)
        if rank != 0:
            return
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_torch({"config": config, "G": G.state_dict(), "D": D.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": g.get_state(),
                    "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch}, ckpt_path)

    live = None
    if live_dir is not None:
        from dvclive import Live

        live = Live(str(live_dir), resume=resumed, dvcyaml=None, save_dvc_exp=False, report=None)
    start_step = step
    bar = tqdm(desc="train", unit="step", disable=not progress, initial=step)
    seen, t0 = 0, time.perf_counter()
    last: dict[str, float] = {}
    while epoch < epochs:
        G.train(), D.train()
        stream = batches(train_urls, batch_size, shuffle=shuffle_buffer, seed=seed, epoch=epoch,
                         workers=workers, rank=rank, world=world)
        for i, batch in enumerate(itertools.islice(stream, limit)):
            if i < step_in_epoch:
                continue  # resuming mid-epoch: replay the same order, skip what was done
            real = to_float(batch["image"]).to(device)  # (B, 3, S, S)
            B = real.size(0)
            emb = pick_caption_embeddings(batch["emb"], captions_per_step, g).to(device)  # (B, D)
            wrong = emb[mismatched(batch["class_id"], g).to(device)]  # (B, D) text of another class
            z = torch.randn(B, z_dim, generator=g).to(device)

            # (1) update D: real+right text -> 1; real+wrong text, fake+right text -> 0
            fake = G(z, emb)
            d_real, feat_real = D(real, emb, return_features=True)
            d_wrong = D(real, wrong) if cls else None
            d_fake = D(fake.detach(), emb)
            loss_d = discriminator_loss(d_real, d_wrong, d_fake, smooth=label_smoothing)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            average([p.grad for p in D.parameters()], world)
            opt_d.step()

            # (2) update G: fool D, also on interpolated text (GAN-INT), plus optional L1 / FM
            d_fake, feat_fake = D(fake, emb, return_features=True)
            d_int = None
            if int_coef > 0:
                partner = torch.randperm(B, generator=g).to(device)
                e_int = interpolate_embeddings(emb, emb[partner], int_beta)
                z_int = torch.randn(B, z_dim, generator=g).to(device)
                d_int = D(G(z_int, e_int), e_int)
            loss_g, parts = generator_loss(d_fake, d_int=d_int, fake=fake, real=real, feat_real=feat_real,
                                           feat_fake=feat_fake, int_coef=int_coef, l1_coef=l1_coef,
                                           fm_coef=fm_coef)
            bad = (~torch.isfinite(loss_d) | ~torch.isfinite(loss_g)).float()
            average([bad], world)  # every rank stops if any rank diverged
            if bad.item() > 0:
                where = f"last good checkpoint: {ckpt_path}" if ckpt_path.is_file() else "no checkpoint yet"
                raise T2IError(f"non-finite loss at step {step + 1} (loss_d={loss_d.item()}, "
                               f"loss_g={loss_g.item()}); stopped, {where}")
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            average([p.grad for p in G.parameters()], world)
            opt_g.step()

            step += 1
            step_in_epoch = i + 1
            seen += B
            last = {"loss_d": loss_d.item(), "loss_g": loss_g.item(),
                    "d_real": torch.sigmoid(d_real).mean().item(),
                    "d_fake": torch.sigmoid(d_fake).mean().item(),
                    **{f"g_{k}": v.item() for k, v in parts.items()}}
            if live is not None and step % log_every == 0:
                live.step = step  # plots are indexed by training step
                for k, v in last.items():
                    live.log_metric(f"train/{k}", v)
                live.log_metric("train/epoch", epoch)
                live.next_step()
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, d=f"{last['loss_d']:.3f}", g=f"{last['loss_g']:.3f}",
                            img_s=f"{rate:.0f}")
            if step % checkpoint_every == 0:
                checkpoint()
            if on_step is not None:
                on_step(step)
        epoch, step_in_epoch = epoch + 1, 0
        if sample_emb is not None and live_dir is not None:
            _sample_grid(G, fixed_z, sample_emb, sample_captions, live_dir / "samples" / f"epoch_{epoch:03d}.png", device)
            G.train()
    bar.close()
    if step == 0:
        raise T2IError(f"no training step ran: fewer than batch_size={batch_size} training images?")
    if step != start_step:  # a finished checkpoint is left as it was written
        checkpoint()
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_generator(out_dir / GENERATOR, G.cpu(), config)
    if live is not None:
        live.end()
    return {"steps": step, "epochs": epoch, "resumed": resumed, **last}


@torch.no_grad()
def _sample_grid(G: Generator, z: torch.Tensor, emb: torch.Tensor, captions: list[str] | None,
                 path: Path, device: str) -> None:
    """Fixed captions (rows) x fixed noise (columns) -> PNG with the captions drawn beside."""
    from t2i.grid import make_grid

    G.eval()
    rows, cols = emb.size(0), max(1, z.size(0) // max(emb.size(0), 1))
    e = emb.to(device).repeat_interleave(cols, dim=0)  # (rows*cols, D)
    images = G(z[: rows * cols].to(device), e).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        make_grid(images, nrow=cols, labels=captions).save(tmp, format="PNG")

