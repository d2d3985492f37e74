"""DF-GAN (Tao et al., CVPR 2022): deep text-image fusion in every generator block, the hinge
loss and the matching-aware gradient penalty (MA-GP).

The family is four small pieces: ``Affine`` (a per-channel scale and shift predicted from the
condition), ``GBlock`` (upsample, two fusion layers of two affines each, two 3x3 convs, a
residual shortcut; no BatchNorm), ``DBlock`` (a residual downsampling block whose residual
branch starts switched off) and ``ConditionalHead`` (D's features joined with the replicated
sentence embedding). The generator's condition is the noise concatenated with the sentence
embedding, and every block sees it, so the text can shape the image at every scale.

Shapes in comments are for 64x64 images, ngf = ndf = 32, a 384-d embedding and z_dim = 100.
Written from the paper and the facts of tobran/DF-GAN (widths, the affine's zero-initialised
last layer, the residual D with a learnt gate), not from its code. One change for short runs is
a param: ``train.df_gan.d_gate`` starts D's residual gates open (docs/experiments.md).

Its own keys are ``train.df_gan.*`` (``DfGan.reads``); of ``train.*`` it reads the shared ones
(``t2i.params.SHARED``), and its record names it (``arch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i.families.common import Family, Loss, ProjectionHead, Shapes, StepInputs, adam_pair, scores_fp32, turn_by_noise
from t2i.losses import hinge_discriminator_loss, hinge_generator_loss, ma_gp
from t2i.params import TrainParams


@dataclass
class DFConfig(Shapes):
    """DF-GAN's shapes. No defaults: ``DfGan.model_config`` fills them from the params (the one
    source of defaults) and the data, and a checkpoint stores them."""

    emb_dim: int  # caption code size: the text model's (384: all-MiniLM-L6-v2) or, with train.text: grounded, ground.dim
    z_dim: int  # noise size
    ngf: int  # generator base width (the paper's nf for birds: 32)
    ndf: int  # discriminator base width
    image_size: int
    channels: int = 3
    fusion_hidden: int | None = field(kw_only=True)  # hidden width of each affine MLP; None: the block's channels
    turn: bool = field(default=False, kw_only=True, metadata={"later": True})  # G turns its S/4 map by its noise (train.g_turn)

    @property
    def cond_dim(self) -> int:
        return self.z_dim + self.emb_dim  # the generator's condition: noise and sentence


def widths(base: int, n_blocks: int) -> list[int]:
    """Channels from the image side to 4x4: base, 2 base, 4 base, 8 base, 8 base, ... (n_blocks + 1)."""
    return [base * min(2 ** i, 8) for i in range(n_blocks + 1)]


def sentence(emb: torch.Tensor) -> torch.Tensor:
    """(B, D) sentence embeddings -> the same directions at norm sqrt(D): unit scale per dimension."""
    return F.normalize(emb, dim=1) * emb.size(1) ** 0.5


class Affine(nn.Module):
    """x * gamma(c) + beta(c), per channel; each of gamma and beta a Linear-ReLU-Linear MLP whose
    last layer starts at gamma = 1, beta = 0 (the block starts as if unconditioned)."""

    def __init__(self, cond_dim: int, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or channels

        def mlp() -> nn.Sequential:
            return nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

        self.gamma, self.beta = mlp(), mlp()
        for last, bias in ((self.gamma[2], 1.0), (self.beta[2], 0.0)):
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.gamma(c)[:, :, None, None] * x + self.beta(c)[:, :, None, None]  # (B, C, H, W)


class Fusion(nn.Module):
    """One deep-fusion layer: affine, LeakyReLU, affine, LeakyReLU."""

    def __init__(self, cond_dim: int, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        self.a0, self.a1 = Affine(cond_dim, channels, hidden), Affine(cond_dim, channels, hidden)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.a0(x, c), 0.2)
        return F.leaky_relu(self.a1(x, c), 0.2)


class GBlock(nn.Module):
    """Upsample x2, then shortcut(x) + conv2(fuse2(conv1(fuse1(x, c)), c)): (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""

    def __init__(self, cond_dim: int, c_in: int, c_out: int, hidden: int | None = None) -> None:
        super().__init__()
        self.fuse1, self.conv1 = Fusion(cond_dim, c_in, hidden), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.fuse2, self.conv2 = Fusion(cond_dim, c_out, hidden), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2)  # nearest neighbour: no checkerboard
        h = self.conv2(self.fuse2(self.conv1(self.fuse1(x, c)), c))
        return self.shortcut(x) + h


class DFGenerator(nn.Module):
    """G(z, emb) -> image in [-1, 1]; the sentence enters every block."""

    def __init__(self, cfg: DFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = widths(cfg.ngf, cfg.n_blocks)[::-1]  # 64x64: [8 ngf, 8 ngf, 4 ngf, 2 ngf, ngf]
        self.fc = nn.Linear(cfg.z_dim, chans[0] * 16)  # (B, z_dim) -> (B, 8 ngf * 4 * 4)
        # (B, 256, 4, 4) -> (B, 256, 8, 8) -> (B, 128, 16, 16) -> (B, 64, 32, 32) -> (B, 32, 64, 64)
        self.blocks = nn.ModuleList(GBlock(cfg.cond_dim, c_in, c_out, cfg.fusion_hidden)
                                    for c_in, c_out in zip(chans, chans[1:]))
        self.to_rgb = nn.Conv2d(chans[-1], cfg.channels, 3, 1, 1)  # (B, 3, 64, 64)

    def forward(self, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        c = torch.cat([z, sentence(emb)], dim=1)  # (B, z_dim + emb_dim)
        h = self.fc(z).view(z.size(0), -1, 4, 4)  # (B, 8 ngf, 4, 4)
        for i, block in enumerate(self.blocks):
            if self.cfg.turn and i == len(self.blocks) - 2:  # h: (B, 4 ngf, S/4, S/4)
                h = turn_by_noise(h, z)
            h = block(h, c)
        return torch.tanh(self.to_rgb(F.leaky_relu(h, 0.2)))  # (B, 3, S, S)


class DBlock(nn.Module):
    """Downsample x2: shortcut(avgpool(x)) + gamma * residual(x), gamma a learnt scalar (from 0 in
    DF-GAN; ``DFDiscriminator.open_gates`` sets another start).
    (DF-GAN pools after its 1x1 shortcut; both are linear, so pooling first is the same map on
    a quarter of the pixels.)"""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),  # (B, c_out, H/2, W/2)
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        )
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(F.avg_pool2d(x, 2)) + self.gamma * self.residual(x)


class ConditionalHead(nn.Module):
    """D's features and the replicated (scaled) sentence -> one score per image."""

    def __init__(self, feat: int, emb_dim: int, ndf: int) -> None:
        super().__init__()
        self.joint = nn.Sequential(
            nn.Conv2d(feat + emb_dim, 2 * ndf, 3, 1, 1, bias=False),  # (B, 2 ndf, 4, 4)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * ndf, 1, 4, 1, 0, bias=False),  # (B, 1, 1, 1)
        )

    def forward(self, feat: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        e = s[:, :, None, None].expand(-1, -1, feat.size(2), feat.size(3))  # (B, emb_dim, 4, 4)
        return self.joint(torch.cat([feat, e], dim=1)).flatten()  # (B,)


class DFDiscriminator(nn.Module):
    """D(img, emb) -> one hinge score per image (high: a real image with its own caption)."""

    def __init__(self, cfg: DFConfig, projection: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        chans = widths(cfg.ndf, cfg.n_blocks)  # 64x64: [ndf, 2 ndf, 4 ndf, 8 ndf, 8 ndf]
        self.from_rgb = nn.Conv2d(cfg.channels, chans[0], 3, 1, 1)  # (B, 32, 64, 64)
        # -> (B, 64, 32, 32) -> (B, 128, 16, 16) -> (B, 256, 8, 8) -> (B, 256, 4, 4)
        self.blocks = nn.Sequential(*(DBlock(c_in, c_out) for c_in, c_out in zip(chans, chans[1:])))
        # train.d_head: concat (DF-GAN's) | projection
        self.head = ProjectionHead(chans[-1], cfg.emb_dim) if projection else ConditionalHead(chans[-1], cfg.emb_dim, cfg.ndf)

    @torch.no_grad()
    def open_gates(self, value: float) -> None:
        """Start every block's residual gate at ``value``. DF-GAN starts them at 0, so that D begins
        as a nearly linear map that grows its residual branches over some 100k steps; opened at 1
        the residual convolutions work from the first step (train.df_gan.d_gate)."""
        for block in self.blocks:
            block.gamma.fill_(value)

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 8 ndf, 4, 4), before the text is joined in."""
        return self.blocks(self.from_rgb(img))

    def judge(self, feat: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Image features (B, 8 ndf, 4, 4) and captions (B, emb_dim) -> (B,) scores."""
        return self.head(feat, sentence(emb))

    def forward(self, img: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.judge(self.features(img), emb)  # (B,)


class DFGeneratorPasses(nn.Module):
    """DF-GAN's G pass of one step: the fakes for the batch's captions."""

    def __init__(self, G: DFGenerator) -> None:
        super().__init__()
        self.G = G

    def forward(self, x: StepInputs) -> dict:
        return {"fake": self.G(x.z, x.emb)}  # (B, 3, S, S)


class DFDiscriminatorPasses(nn.Module):
    """DF-GAN's D passes in one call: real image + right text, real image + wrong text (the real
    features reused, as in DF-GAN), MA-GP on the real pairs, with respect to the image and the
    sentence as D's head sees it ("gp", None when off), and fake + right text."""

    def __init__(self, D: DFDiscriminator, cls: bool, magp_coef: float, magp_power: float) -> None:
        super().__init__()
        self.D, self.cls, self.magp_coef, self.magp_power = D, cls, magp_coef, magp_power

    def forward(self, x: StepInputs, fake: torch.Tensor) -> dict:
        gp_on = self.magp_coef > 0  # MA-GP differentiates D's output with respect to both inputs
        real = x.real if x.real.requires_grad else x.real.detach().requires_grad_(gp_on)  # (train.r1_coef: already)
        s = sentence(x.emb).detach().requires_grad_(gp_on)
        feat_real = self.D.features(real)  # (B, 8 ndf, 4, 4)
        d_real = self.D.head(feat_real, s)  # (B,)
        d_wrong = self.D.head(feat_real, sentence(x.wrong)) if self.cls else None
        gp = ma_gp(d_real.float(), real, s, self.magp_power) if gp_on else None
        feat_fake = self.D.features(fake)
        d_fake = self.D.head(feat_fake, sentence(x.emb))
        return {"real": d_real, "wrong": d_wrong, "fake": d_fake, "feat_real": feat_real, "feat_fake": feat_fake,
                "gp": gp}


class DFDiscriminatorOnFakes(nn.Module):
    """D's pass in DF-GAN's G loss: the fakes with their captions."""

    def __init__(self, D: DFDiscriminator) -> None:
        super().__init__()
        self.D = D

    def forward(self, x: StepInputs, g_out: dict) -> dict:
        feat_fake = self.D.features(g_out["fake"])  # (B, 8 ndf, 4, 4)
        return {"fake": self.D.head(feat_fake, sentence(x.emb)), "feat_fake": feat_fake}


class DfGan(Family):
    """DF-GAN: hinge loss on D's scores, MA-GP on real pairs, Adam at its own rates (train.df_gan)."""

    name = "df-gan"
    Config = DFConfig
    reads = ("df_gan",)
    compile_refusal = "MA-GP's double backward is untested under torch.compile"
    batchnorm = False

    def model_config(self, cfg: TrainParams, emb_dim: int, image_size: int) -> DFConfig:
        df = cfg.df_gan
        return DFConfig(emb_dim=emb_dim, z_dim=cfg.z_dim, ngf=df.ngf, ndf=df.ndf, image_size=image_size,
                        fusion_hidden=df.fusion_hidden, turn=cfg.g_turn)

    def generator(self, model_cfg: DFConfig) -> DFGenerator:
        return DFGenerator(model_cfg)

    def discriminator(self, cfg: TrainParams, model_cfg: DFConfig) -> DFDiscriminator:
        """A fresh D, its residual gates at train.df_gan.d_gate."""
        D = DFDiscriminator(model_cfg, projection=cfg.d_head == "projection")
        D.open_gates(cfg.df_gan.d_gate)
        return D

    def optimisers(self, cfg: TrainParams, G: nn.Module, D: nn.Module, **extra):
        df = cfg.df_gan
        return adam_pair(G, D, df.lr_g, df.lr_d, (df.beta1, df.beta2), **extra)

    def draws(self, cfg: TrainParams, batch: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        return {}  # the shared noise is all it draws

    def passes(self, cfg: TrainParams, G: nn.Module, D: nn.Module):
        df = cfg.df_gan
        d_passes = DFDiscriminatorPasses(D, cfg.cls, df.magp_coef, df.magp_power)
        return DFGeneratorPasses(G), d_passes, DFDiscriminatorOnFakes(D)

    def d_loss(self, cfg: TrainParams, x: StepInputs, d_out: dict) -> Loss:
        """The hinge loss, plus magp_coef * MA-GP; parts: magp (when on)."""
        gp = d_out["gp"]
        if (gp is None) != (cfg.df_gan.magp_coef == 0):
            raise ValueError("the D passes were built with another train.df_gan.magp_coef than this step's")
        loss = Loss(hinge_discriminator_loss(*scores_fp32(d_out)))
        if gp is not None:
            loss.add("magp", cfg.df_gan.magp_coef, gp)
        return loss

    def g_loss(self, cfg: TrainParams, x: StepInputs, g_out: dict, d_out: dict, d_fakes_out: dict) -> Loss:
        """-D(fake, text); no further parts."""
        return Loss(hinge_generator_loss(d_fakes_out["fake"].float()))
