"""GAN-CLS (Reed et al. 2016): a DCGAN generator and a matching-aware discriminator, with GAN-INT
(interpolated captions), and optionally conditioning augmentation (StackGAN), feature matching,
an L1 term and mode seeking (MSGAN).

Its own keys are flat ``train.*`` keys (``GanCls.reads``, beside ``t2i.params.SHARED``). Its
record, the config stored with the weights, is the one it was before families existed: no ``arch``.
Shapes in comments are for 64x64 images; B = batch, ngf and ndf the base widths (train.ngf, train.ndf).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from t2i.families.common import Family, Loss, ProjectionHead, Shapes, StepInputs, adam_pair, scores_fp32, turn_by_noise
from t2i.losses import discriminator_loss, generator_loss, interpolate_embeddings, mode_seeking_loss
from t2i.params import TrainParams


@dataclass
class ModelConfig(Shapes):
    """GAN-CLS's shapes. No defaults: ``GanCls.model_config`` fills them from the params (the one
    source of defaults) and the data, and a checkpoint stores them."""

    emb_dim: int  # caption code size: the text model's (384: all-MiniLM-L6-v2) or, with train.text: grounded, ground.dim
    z_dim: int  # noise size
    proj_dim: int  # text embedding is compressed to this size
    ngf: int  # generator base width
    ndf: int  # discriminator base width
    image_size: int
    channels: int = 3
    # Keyword-only, so that it can follow ``channels`` without a default: the field order is the
    # order of the config stored in every checkpoint, and a GAN-CLS file's bytes must not change.
    ca: bool = field(kw_only=True)  # conditioning augmentation (StackGAN): G samples its text code
    upsample: str = field(default="deconv", kw_only=True, metadata={"later": True})  # G's x2 steps (train.g_upsample)
    turn: bool = field(default=False, kw_only=True, metadata={"later": True})  # G turns its S/4 map by its noise (train.g_turn)


def _widths(base: int, n_blocks: int) -> list[int]:
    """Channel widths from the 4x4 map outwards: base*8, base*4, ... never below base."""
    return [base * max(8 >> i, 1) for i in range(n_blocks)]


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv/linear weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def up(kind: str, c_in: int, c_out: int, bias: bool) -> list[nn.Module]:
    """A x2 upsampling step: DCGAN's 4x4 stride-2 transposed convolution ("deconv"), or a
    nearest-neighbour x2 and a 3x3 convolution ("nearest": no checkerboard, each output pixel
    from one kernel; Odena et al. 2016)."""
    if kind == "deconv":
        return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)]
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)]


class TextProjection(nn.Module):
    """Compress a sentence embedding: Linear -> BatchNorm1d -> LeakyReLU(0.2)."""

    def __init__(self, emb_dim: int, proj_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(emb_dim, proj_dim, bias=False),  # (B, proj_dim); BN supplies the bias
            nn.BatchNorm1d(proj_dim),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net(emb)  # (B, emb_dim) -> (B, proj_dim)


class Generator(nn.Module):
    """G(z, emb) -> image in [-1, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.ca:  # (B, emb_dim) -> mean and log-variance of the text code, (B, proj_dim) each
            self.ca = nn.Sequential(nn.Linear(cfg.emb_dim, 2 * cfg.proj_dim), nn.LeakyReLU(0.2, inplace=True))
        else:
            self.proj = TextProjection(cfg.emb_dim, cfg.proj_dim)
        widths = _widths(cfg.ngf, cfg.n_blocks)  # 64x64: [ngf*8, ngf*4, ngf*2, ngf]

        # (B, z_dim + proj_dim, 1, 1) -> (B, ngf*8, 4, 4)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.z_dim + cfg.proj_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        # (B, ngf*8, 4, 4) -> (B, ngf*4, 8, 8) -> (B, ngf*2, 16, 16) -> (B, ngf, 32, 32)
        for c_in, c_out in zip(widths, widths[1:]):
            self.turn_at = len(layers)  # ends at the last of these steps: its input is the (S/4)x(S/4) map
            layers += [*up(cfg.upsample, c_in, c_out, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        # (B, ngf, 32, 32) -> (B, 3, 64, 64)
        layers += [*up(cfg.upsample, widths[-1], cfg.channels, bias=True), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def condition(self, emb: torch.Tensor, eps: torch.Tensor | None = None):
        """The text code (B, proj_dim) and, with conditioning augmentation, its KL divergence
        to N(0, I) (mean per dimension). With CA the code is mu + sigma * eps, or mu without eps
        (evaluation, generation)."""
        if not self.cfg.ca:
            return self.proj(emb), None
        mu, logvar = self.ca(emb).chunk(2, dim=1)  # (B, proj_dim) each
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()
        return (mu if eps is None else mu + (0.5 * logvar).exp() * eps), kl

    def decode(self, z: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, code], dim=1)[:, :, None, None]  # (B, z_dim + proj_dim, 1, 1)
        if not self.cfg.turn:
            return self.net(h)  # (B, 3, S, S)
        h = self.net[:self.turn_at](h)  # (B, ngf*2, S/4, S/4)
        return self.net[self.turn_at:](turn_by_noise(h, z))  # (B, 3, S, S)

    def forward(self, z: torch.Tensor, emb: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(z, self.condition(emb, eps)[0])


class Discriminator(nn.Module):
    """Matching-aware D(img, emb) -> one logit per image (real *and* matching text)."""

    def __init__(self, cfg: ModelConfig, projection: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        widths = _widths(cfg.ndf, cfg.n_blocks)[::-1]  # 64x64: [ndf, ndf*2, ndf*4, ndf*8]

        # (B, 3, 64, 64) -> (B, ndf, 32, 32), no BN on the first layer
        layers: list[nn.Module] = [
            nn.Conv2d(cfg.channels, widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        # (B, ndf, 32, 32) -> (B, ndf*2, 16, 16) -> (B, ndf*4, 8, 8) -> (B, ndf*8, 4, 4)
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.image_net = nn.Sequential(*layers)

        c = widths[-1]  # ndf*8
        if projection:  # train.d_head: projection: (B, ndf*8, 4, 4) and (B, emb_dim) -> (B,)
            self.head = ProjectionHead(c, cfg.emb_dim)
        else:  # Reed et al.'s: the text code replicated over the 4x4 map, joined by convolutions
            self.head = None
            self.proj = TextProjection(cfg.emb_dim, cfg.proj_dim)
            self.joint = nn.Sequential(
                nn.Conv2d(c + cfg.proj_dim, c, 1, 1, 0, bias=False),  # (B, ndf*8, 4, 4)
                nn.BatchNorm2d(c),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(c, 1, 4, 1, 0),  # (B, 1, 1, 1)
            )
        self.apply(init_weights)

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """Image feature map before the text is joined in: (B, ndf*8, 4, 4)."""
        return self.image_net(img)

    def forward(
        self, img: torch.Tensor, emb: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feat = self.features(img)  # (B, ndf*8, 4, 4)
        logits = self.judge(feat, emb)  # (B,)
        return (logits, feat) if return_features else logits

    def judge(self, feat: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Image features (B, ndf*8, 4, 4) and captions (B, emb_dim) -> (B,) logits."""
        if self.head is not None:
            return self.head(feat, emb)  # (B,)
        t = self.proj(emb)  # (B, proj_dim)
        t = t[:, :, None, None].expand(-1, -1, feat.size(2), feat.size(3))  # (B, proj_dim, 4, 4)
        return self.joint(torch.cat([feat, t], dim=1)).flatten()  # (B,)


class GeneratorPasses(nn.Module):
    """G's forward passes of one step in one call (so DDP sees one forward per backward): the
    fakes for the batch's captions, with GAN-INT for interpolations between captions, with
    mode seeking for a second noise; with conditioning augmentation the text code's KL term."""

    def __init__(self, G: Generator, int_beta: float) -> None:
        super().__init__()
        self.G, self.int_beta = G, int_beta

    def forward(self, x: StepInputs) -> dict:
        draws = x.draws
        code, kl = self.G.condition(x.emb, draws.get("eps"))  # (B, proj_dim)
        out = {"fake": self.G.decode(x.z, code), "kl": kl}  # (B, 3, S, S)
        if "z_int" in draws:
            out["e_int"] = interpolate_embeddings(x.emb, x.emb[draws["partner"]], self.int_beta)  # (B, D)
            out["fake_int"] = self.G(draws["z_int"], out["e_int"], draws.get("eps_int"))
        if "z2" in draws:
            out["fake2"] = self.G.decode(draws["z2"], code)  # same caption and code, other noise
        return out


class DiscriminatorPasses(nn.Module):
    """D's three passes in one call (one forward per backward, as DDP requires): real image +
    right text, real image + wrong text (with ``cls``; ``t2i.wrong``), fake + right text."""

    def __init__(self, D: Discriminator, cls: bool) -> None:
        super().__init__()
        self.D, self.cls = D, cls

    def forward(self, x: StepInputs, fake: torch.Tensor) -> dict:
        d_real, feat_real = self.D(x.real, x.emb, return_features=True)  # (B,), (B, ndf*8, 4, 4)
        d_wrong = self.D(x.real, x.wrong) if self.cls else None
        d_fake, feat_fake = self.D(fake, x.emb, return_features=True)
        return {"real": d_real, "wrong": d_wrong, "fake": d_fake, "feat_real": feat_real, "feat_fake": feat_fake}


class DiscriminatorOnFakes(nn.Module):
    """D's passes in G's loss (D is not updated there): the fakes with their captions, with D's
    features for feature matching, and the GAN-INT fakes with their interpolated captions ("int")."""

    def __init__(self, D: Discriminator) -> None:
        super().__init__()
        self.D = D

    def forward(self, x: StepInputs, g_out: dict) -> dict:
        d_fake, feat_fake = self.D(g_out["fake"], x.emb, return_features=True)  # (B,), (B, ndf*8, 4, 4)
        out = {"fake": d_fake, "feat_fake": feat_fake}
        if "fake_int" in g_out:
            out["int"] = self.D(g_out["fake_int"], g_out["e_int"])  # (B,)
        return out


class GanCls(Family):
    """GAN-CLS: BCE on logits; D learns real image + right text -> 1, wrong text or fake -> 0."""

    name = "gan-cls"
    Config = ModelConfig
    reads = ("lr", "beta1", "beta2", "proj_dim", "ngf", "ndf", "int_coef", "int_beta", "l1_coef", "fm_coef",
             "label_smoothing", "ca", "kl_coef", "ms_coef", "g_upsample")
    names_itself = False
    seen_by_d = ("fake", "fake_int")

    def model_config(self, cfg: TrainParams, emb_dim: int, image_size: int) -> ModelConfig:
        return ModelConfig(emb_dim=emb_dim, z_dim=cfg.z_dim, proj_dim=cfg.proj_dim, ngf=cfg.ngf, ndf=cfg.ndf,
                           image_size=image_size, ca=cfg.ca, upsample=cfg.g_upsample, turn=cfg.g_turn)

    def generator(self, model_cfg: ModelConfig) -> Generator:
        return Generator(model_cfg)

    def discriminator(self, cfg: TrainParams, model_cfg: ModelConfig) -> Discriminator:
        return Discriminator(model_cfg, projection=cfg.d_head == "projection")

    def optimisers(self, cfg: TrainParams, G: nn.Module, D: nn.Module, **extra):
        return adam_pair(G, D, cfg.lr, cfg.lr, (cfg.beta1, cfg.beta2), **extra)

    def draws(self, cfg: TrainParams, batch: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        out = {}
        if cfg.int_coef > 0:
            out["partner"] = torch.randperm(batch, generator=rng)  # (B,) GAN-INT: whose caption each is mixed with
            out["z_int"] = torch.randn(batch, cfg.z_dim, generator=rng)  # (B, z_dim) noise for the mixed captions
        if cfg.ca:  # drawn after the draws above, so turning it on leaves those unchanged
            out["eps"] = torch.randn(batch, cfg.proj_dim, generator=rng)  # (B, proj_dim) the text code's draw
            if cfg.int_coef > 0:
                out["eps_int"] = torch.randn(batch, cfg.proj_dim, generator=rng)  # the same for the mixed captions
        if cfg.ms_coef > 0:
            out["z2"] = torch.randn(batch, cfg.z_dim, generator=rng)  # (B, z_dim) mode seeking: a second noise
        return out

    def passes(self, cfg: TrainParams, G: nn.Module, D: nn.Module):
        return GeneratorPasses(G, cfg.int_beta), DiscriminatorPasses(D, cfg.cls), DiscriminatorOnFakes(D)

    def d_loss(self, cfg: TrainParams, x: StepInputs, d_out: dict) -> Loss:
        """Real image + right text -> 1; real + wrong text, fake + right text -> 0 (one-sided
        label smoothing: real -> 1 - label_smoothing)."""
        d_real, d_wrong, d_fake = scores_fp32(d_out)
        return Loss(discriminator_loss(d_real, d_wrong, d_fake, smooth=cfg.label_smoothing))

    def g_loss(self, cfg: TrainParams, x: StepInputs, g_out: dict, d_out: dict, d_fakes_out: dict) -> Loss:
        """Fool D, also on interpolated text (GAN-INT), plus the optional L1, feature matching
        (against D's features of the real images in D's update), KL (conditioning augmentation)
        and mode-seeking terms; parts: adv, int, l1, fm, kl, ms (those in use)."""
        fake = g_out["fake"]
        d_fake, feat_fake = d_fakes_out["fake"].float(), d_fakes_out["feat_fake"].float()  # losses in fp32
        d_int = d_fakes_out["int"].float() if "int" in d_fakes_out else None
        kl = g_out["kl"].float() if g_out["kl"] is not None else None
        ms = mode_seeking_loss(fake.float(), g_out["fake2"].float(), x.z, x.draws["z2"]) if "fake2" in g_out else None
        total, parts = generator_loss(d_fake, d_int=d_int, fake=fake.float(), real=x.real,
                                      feat_real=d_out["feat_real"].float(), feat_fake=feat_fake, kl=kl, ms=ms,
                                      int_coef=cfg.int_coef, l1_coef=cfg.l1_coef, fm_coef=cfg.fm_coef,
                                      kl_coef=cfg.kl_coef if cfg.ca else 0.0, ms_coef=cfg.ms_coef)
        return Loss(total, parts)

    def score(self, d: torch.Tensor) -> torch.Tensor:
        """D's logits as probabilities."""
        return torch.sigmoid(d)
