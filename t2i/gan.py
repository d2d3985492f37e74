"""One GAN update for either model family (``train.arch``), shared by the training loop,
benchmarks and tests: GAN-CLS (Reed et al. 2016) and DF-GAN (Tao et al. 2022).

``step_inputs`` makes every random choice of a step, in a fixed order, from one ``torch.Generator``.
The ``*_loss_of`` functions are forward passes only. ``gan_step`` does (1) update D, (2) update G
for both families and returns detached tensors: no ``.item()``, no I/O, no rank logic and no
random numbers inside. ``guard`` checks a loss before its optimiser steps.
Each model's forward passes of a step are one module call (``GeneratorPasses``,
``DiscriminatorPasses`` and their DF-GAN siblings), so that under torchrun DistributedDataParallel
averages the gradients, bucketed and overlapped with the backward, exactly as for any
one-forward model. DF-GAN's MA-GP (a gradient of D's output, itself differentiated) is taken
inside its D passes, so the one backward of D's loss carries it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from t2i.data.loader import to_float
from t2i.losses import (discriminator_loss, generator_loss, hinge_discriminator_loss, hinge_generator_loss,
                        interpolate_embeddings, ma_gp, mode_seeking_loss)
from t2i.models import Generator, ModelConfig, build
from t2i.models_df import DFConfig, sentence
from t2i.params import TrainParams

Guard = Callable[[str, torch.Tensor], None]  # raises before a non-finite loss updates a model


@dataclass
class StepInputs:
    real: torch.Tensor  # (B, 3, S, S) real images in [-1, 1]
    emb: torch.Tensor  # (B, D) their caption embeddings (the mean of captions_per_step captions)
    wrong: torch.Tensor  # (B, D) caption embeddings of images of other classes (GAN-CLS)
    z: torch.Tensor  # (B, z_dim) noise
    partner: torch.Tensor | None  # (B,) GAN-INT: whose caption each caption is mixed with
    z_int: torch.Tensor | None  # (B, z_dim) noise for the interpolated captions
    eps: torch.Tensor | None = None  # (B, proj_dim) conditioning augmentation's draw
    eps_int: torch.Tensor | None = None  # (B, proj_dim) the same for the interpolated captions
    z2: torch.Tensor | None = None  # (B, z_dim) mode seeking: a second noise per caption


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


class GeneratorPasses(nn.Module):
    """G's forward passes of one step in one call (so DDP sees one forward per backward): the
    fakes for the batch's captions, with GAN-INT for interpolations between captions, with
    mode seeking for a second noise; with conditioning augmentation the text code's KL term."""

    def __init__(self, G: Generator, int_beta: float) -> None:
        super().__init__()
        self.G, self.int_beta = G, int_beta

    def forward(self, x: StepInputs) -> dict:
        code, kl = self.G.condition(x.emb, x.eps)  # (B, proj_dim)
        out = {"fake": self.G.decode(x.z, code), "kl": kl}  # (B, 3, S, S)
        if x.z_int is not None:
            out["e_int"] = interpolate_embeddings(x.emb, x.emb[x.partner], self.int_beta)  # (B, D)
            out["fake_int"] = self.G(x.z_int, out["e_int"], x.eps_int)
        if x.z2 is not None:
            out["fake2"] = self.G.decode(x.z2, code)  # same caption and code, other noise
        return out


class DiscriminatorPasses(nn.Module):
    """D's three GAN-CLS passes in one call (one forward per backward, as DDP requires):
    real image + right text, real image + wrong text (when ``x.wrong`` is used), fake + right text."""

    def __init__(self, D: nn.Module, cls: bool) -> None:
        super().__init__()
        self.D, self.cls = D, cls

    def forward(self, x: StepInputs, fake: torch.Tensor):
        d_real, feat_real = self.D(x.real, x.emb, return_features=True)  # (B,), (B, ndf*8, 4, 4)
        d_wrong = self.D(x.real, x.wrong) if self.cls else None
        return d_real, feat_real, d_wrong, self.D(fake, x.emb)


class DiscriminatorOnFakes(nn.Module):
    """D's passes in G's loss (D is not updated there): the fakes with their captions, with D's
    features for feature matching, and the GAN-INT fakes with their interpolated captions."""

    def __init__(self, D: nn.Module) -> None:
        super().__init__()
        self.D = D

    def forward(self, x: StepInputs, fake: torch.Tensor, fake_int: torch.Tensor | None, e_int: torch.Tensor | None):
        d_fake, feat_fake = self.D(fake, x.emb, return_features=True)  # (B,), (B, ndf*8, 4, 4)
        return d_fake, feat_fake, self.D(fake_int, e_int) if fake_int is not None else None


class DFGeneratorPasses(nn.Module):
    """DF-GAN's G pass of one step: the fakes for the batch's captions."""

    def __init__(self, G: nn.Module) -> None:
        super().__init__()
        self.G = G

    def forward(self, x: StepInputs) -> dict:
        return {"fake": self.G(x.z, x.emb)}  # (B, 3, S, S)


class DFDiscriminatorPasses(nn.Module):
    """DF-GAN's D passes in one call: real image + right text, real image + wrong text (the real
    features reused, as in DF-GAN), fake + right text, and MA-GP on the real pairs, with respect
    to the image and the sentence as D's head sees it."""

    def __init__(self, D: nn.Module, cls: bool, magp_coef: float, magp_power: float) -> None:
        super().__init__()
        self.D, self.cls, self.magp_coef, self.magp_power = D, cls, magp_coef, magp_power

    def forward(self, x: StepInputs, fake: torch.Tensor):
        gp_on = self.magp_coef > 0  # MA-GP differentiates D's output with respect to both inputs
        real, s = x.real.detach().requires_grad_(gp_on), sentence(x.emb).detach().requires_grad_(gp_on)
        feat = self.D.features(real)  # (B, 8 ndf, 4, 4)
        d_real = self.D.head(feat, s)  # (B,)
        d_wrong = self.D.head(feat, sentence(x.wrong)) if self.cls else None
        gp = ma_gp(d_real.float(), real, s, self.magp_power) if gp_on else None
        return d_real, d_wrong, self.D(fake, x.emb), gp


class DFDiscriminatorOnFakes(nn.Module):
    """D's pass in DF-GAN's G loss: the fakes with their captions."""

    def __init__(self, D: nn.Module) -> None:
        super().__init__()
        self.D = D

    def forward(self, x: StepInputs, fake: torch.Tensor) -> torch.Tensor:
        return self.D(fake, x.emb)  # (B,)


@dataclass
class Trainables:
    """What a training step updates and calls. ``G`` and ``D`` are the modules to save; the step
    calls the three pass modules, which share G's and D's parameters (the first two wrapped in
    DDP under torchrun; all three compiled with ``train.compile``, each one stable graph)."""

    G: nn.Module  # Generator or DFGenerator
    D: nn.Module  # Discriminator or DFDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    g_passes: nn.Module  # GeneratorPasses | DFGeneratorPasses
    d_passes: nn.Module  # DiscriminatorPasses | DFDiscriminatorPasses
    d_fakes: nn.Module  # DiscriminatorOnFakes | DFDiscriminatorOnFakes (outside DDP: D is not updated in G's step)


def model_config(cfg: TrainParams, emb_dim: int, image_size: int) -> ModelConfig | DFConfig:
    """The models' shapes for training params ``cfg`` on data of ``emb_dim`` and ``image_size``."""
    if cfg.arch == "df-gan":
        df = cfg.df_gan
        return DFConfig(emb_dim=emb_dim, z_dim=cfg.z_dim, ngf=df.ngf, ndf=df.ndf, image_size=image_size,
                        fusion_hidden=df.fusion_hidden)
    return ModelConfig(emb_dim=emb_dim, z_dim=cfg.z_dim, proj_dim=cfg.proj_dim, ngf=cfg.ngf, ndf=cfg.ndf,
                       image_size=image_size, ca=cfg.ca)


def trainables(cfg: TrainParams, model_cfg: ModelConfig | DFConfig, device: str = "cpu", world: int = 1) -> Trainables:
    """Fresh G and D of family ``cfg.arch`` (seeded by ``cfg.seed``), their Adam optimisers
    (fused on CUDA), and the passes the step calls; with ``world`` > 1, wrapped in
    DistributedDataParallel (with ``cfg.sync_bn``, BatchNorm statistics over all ranks' batches)."""
    torch.manual_seed(cfg.seed)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # the step's shapes never change: let cuDNN pick its fastest kernels
    G, D = (m.to(device) for m in build(cfg.arch, model_cfg))
    if cfg.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    if world > 1 and cfg.sync_bn:  # BatchNorm over the global batch; before the optimisers take the parameters
        from t2i.distributed import sync_batchnorm

        G, D = sync_batchnorm(G), sync_batchnorm(D)
    fused = {"fused": True} if cuda else {}
    if cfg.arch == "df-gan":
        df = cfg.df_gan
        D.open_gates(df.d_gate)
        lr_g, lr_d, betas = df.lr_g, df.lr_d, (df.beta1, df.beta2)
        g_passes, d_passes = DFGeneratorPasses(G), DFDiscriminatorPasses(D, cfg.cls, df.magp_coef, df.magp_power)
        d_fakes = DFDiscriminatorOnFakes(D)
    else:
        lr_g = lr_d = cfg.lr
        betas = (cfg.beta1, cfg.beta2)
        g_passes, d_passes, d_fakes = GeneratorPasses(G, cfg.int_beta), DiscriminatorPasses(D, cfg.cls), DiscriminatorOnFakes(D)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas, **fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas, **fused)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Buffers (BatchNorm running stats) are averaged at every checkpoint instead of being
        # broadcast from rank 0 before every forward (t2i.train).
        ids = [torch.device(device).index] if cuda else None
        g_passes, d_passes = (DDP(m, device_ids=ids, broadcast_buffers=False) for m in (g_passes, d_passes))
    if cfg.compile:
        g_passes, d_passes, d_fakes = (torch.compile(m) for m in (g_passes, d_passes, d_fakes))
    return Trainables(G, D, opt_g, opt_d, g_passes, d_passes, d_fakes)


def autocast(cfg: TrainParams, device: torch.device | str):
    """The forward passes' precision: bf16 autocast when ``cfg.precision`` asks for it (auto: on CUDA)."""
    from t2i.device import pick_precision

    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=pick_precision(cfg.precision, kind) == "bf16")


def step_inputs(batch: dict, cfg: TrainParams, g: torch.Generator, device: str = "cpu") -> StepInputs:
    """A loader batch -> the inputs of one step, with every random draw taken from ``g`` (on the
    CPU, in a fixed order). On CUDA the uint8 images go up as they are and become floats there,
    and the draws go up in one pinned, non-blocking copy per dtype."""
    B = batch["image"].size(0)
    emb = pick_caption_embeddings(batch["emb"], cfg.captions_per_step, g)  # (B, D)
    wrong = mismatched(batch["class_id"], g)  # (B,) index of another class's caption
    z = torch.randn(B, cfg.z_dim, generator=g)
    partner = z_int = eps = eps_int = z2 = None
    if cfg.arch == "gan-cls":  # DF-GAN draws nothing more
        if cfg.int_coef > 0:
            partner = torch.randperm(B, generator=g)
            z_int = torch.randn(B, cfg.z_dim, generator=g)
        if cfg.ca:  # drawn after the draws above, so turning it on leaves those unchanged
            eps = torch.randn(B, cfg.proj_dim, generator=g)
            eps_int = torch.randn(B, cfg.proj_dim, generator=g) if cfg.int_coef > 0 else None
        if cfg.ms_coef > 0:
            z2 = torch.randn(B, cfg.z_dim, generator=g)
    real = to_float(upload([batch["image"]], device)[0])  # (B, 3, H, W) in [-1, 1]
    if cfg.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    wrong, partner = upload([wrong, partner], device)
    emb, z, z_int, eps, eps_int, z2 = upload([emb, z, z_int, eps, eps_int, z2], device)
    return StepInputs(real, emb, emb[wrong], z, partner, z_int, eps, eps_int, z2)


def upload(tensors: list[torch.Tensor | None], device: str) -> list[torch.Tensor | None]:
    """CPU tensors of one dtype -> ``device``: as they are on the CPU; elsewhere in one
    non-blocking copy from pinned memory, returned as views of that one buffer (None stays None)."""
    present = [t for t in tensors if t is not None]
    if torch.device(device).type == "cpu" or not present:
        return list(tensors)
    flat = present[0].reshape(-1) if len(present) == 1 else torch.cat([t.reshape(-1) for t in present])
    if not flat.is_pinned():  # the loader's batches come pinned with workers
        flat = flat.pin_memory()
    flat = flat.to(device, non_blocking=True)
    out, offset = [], 0
    for t in tensors:
        out.append(None if t is None else flat[offset:offset + t.numel()].view_as(t))
        offset += 0 if t is None else t.numel()
    return out


def discriminator_loss_of(d_passes: nn.Module, x: StepInputs, fake: torch.Tensor, cfg: TrainParams):
    """GAN-CLS D's loss: real image + right text -> 1; real + wrong text, fake + right text -> 0.
    Returns (loss, D's logits on real pairs, D's features of real pairs)."""
    with autocast(cfg, x.real.device):
        d_real, feat_real, d_wrong, d_fake = d_passes(x, fake.detach())
    d_real, d_fake = d_real.float(), d_fake.float()  # losses in fp32
    d_wrong = d_wrong.float() if d_wrong is not None else None
    return discriminator_loss(d_real, d_wrong, d_fake, smooth=cfg.label_smoothing), d_real, feat_real.float()


def generator_loss_of(d_fakes: nn.Module, x: StepInputs, g_out: dict, feat_real: torch.Tensor, cfg: TrainParams):
    """G's loss: fool D, also on interpolated text (GAN-INT), plus the optional L1, feature
    matching, KL (conditioning augmentation) and mode-seeking terms. ``g_out`` is what
    ``GeneratorPasses`` returned. Returns (loss, its unweighted parts, D's logits on the fakes)."""
    fake = g_out["fake"]
    with autocast(cfg, x.real.device):
        d_fake, feat_fake, d_int = d_fakes(x, fake, g_out.get("fake_int"), g_out.get("e_int"))
    d_fake, feat_fake = d_fake.float(), feat_fake.float()  # losses in fp32
    d_int = d_int.float() if d_int is not None else None
    kl = g_out["kl"].float() if g_out["kl"] is not None else None
    ms = mode_seeking_loss(fake.float(), g_out["fake2"].float(), x.z, x.z2) if "fake2" in g_out else None
    loss, parts = generator_loss(d_fake, d_int=d_int, fake=fake.float(), real=x.real, feat_real=feat_real,
                                 feat_fake=feat_fake, kl=kl, ms=ms, int_coef=cfg.int_coef, l1_coef=cfg.l1_coef,
                                 fm_coef=cfg.fm_coef, kl_coef=cfg.kl_coef if cfg.ca else 0.0,
                                 ms_coef=cfg.ms_coef)
    return loss, parts, d_fake


def df_discriminator_loss_of(d_passes: nn.Module, x: StepInputs, fake: torch.Tensor, cfg: TrainParams):
    """DF-GAN D's hinge loss plus MA-GP. Returns (loss, D's scores on real pairs, the
    unweighted penalty or None)."""
    with autocast(cfg, x.real.device):
        d_real, d_wrong, d_fake, gp = d_passes(x, fake.detach())
    if (gp is None) != (cfg.df_gan.magp_coef == 0):
        raise ValueError("the D passes were built with another train.df_gan.magp_coef than this step's")
    d_real, d_fake = d_real.float(), d_fake.float()  # losses in fp32
    loss = hinge_discriminator_loss(d_real, d_wrong.float() if d_wrong is not None else None, d_fake)
    return (loss if gp is None else loss + cfg.df_gan.magp_coef * gp), d_real, gp


def df_generator_loss_of(d_fakes: nn.Module, x: StepInputs, g_out: dict, cfg: TrainParams):
    """DF-GAN G's loss, -D(fake, text). Returns (loss, no further parts, D's scores on the fakes)."""
    with autocast(cfg, x.real.device):
        d_fake = d_fakes(x, g_out["fake"]).float()
    return hinge_generator_loss(d_fake), {}, d_fake


def gan_step(t: Trainables, x: StepInputs, cfg: TrainParams, *, guard: Guard | None = None) -> dict[str, torch.Tensor]:
    """(1) update D, (2) update G; the step's losses and D's mean outputs (GAN-CLS: as
    probabilities; DF-GAN: raw hinge scores), detached. Under DDP the gradients are averaged
    across ranks during each backward."""
    df = cfg.arch == "df-gan"
    with autocast(cfg, x.real.device):
        g_out = t.g_passes(x)  # fakes (B, 3, S, S), ...; G is not updated before (2)

    # (1) update D
    if df:
        loss_d, d_real, magp = df_discriminator_loss_of(t.d_passes, x, g_out["fake"], cfg)
    else:
        loss_d, d_real, feat_real = discriminator_loss_of(t.d_passes, x, g_out["fake"], cfg)
    t.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    if guard is not None:
        guard("loss_d", loss_d)
    t.opt_d.step()

    # (2) update G (against the updated D; D's weight gradients are not needed here)
    t.D.requires_grad_(False)
    if df:
        loss_g, parts, d_fake = df_generator_loss_of(t.d_fakes, x, g_out, cfg)
    else:
        loss_g, parts, d_fake = generator_loss_of(t.d_fakes, x, g_out, feat_real, cfg)
    t.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    t.D.requires_grad_(True)
    if guard is not None:
        guard("loss_g", loss_g)
    t.opt_g.step()
    score = (lambda d: d) if df else torch.sigmoid
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
            "d_real": score(d_real).mean().detach(), "d_fake": score(d_fake).mean().detach(),
            **{f"g_{k}": v.detach() for k, v in parts.items()},
            **({"d_magp": magp.detach()} if df and magp is not None else {})}
