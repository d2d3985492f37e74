"""DCGAN generator and matching-aware discriminator for GAN-CLS (Reed et al. 2016), and
``build``, which picks a model family (this one or DF-GAN's, t2i/models_df.py) by name.

Shapes in comments are for 64x64 images; B = batch, ngf and ndf the base widths (train.ngf, train.ndf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from t2i.params import IMAGE_SIZES


def blocks_between(image_size: int) -> int:
    """Up- or downsampling blocks between the 4x4 map and an image of ``image_size`` (one of
    IMAGE_SIZES, the sizes every family is built for): log2(image_size) - 2."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
    return int(math.log2(image_size)) - 2


@dataclass
class ModelConfig:
    """GAN-CLS's shapes. No defaults: ``t2i.gan.model_config`` fills them from the params (the
    one source of defaults) and the data, and a checkpoint stores them."""

    emb_dim: int  # sentence embedding size (384: all-MiniLM-L6-v2)
    z_dim: int  # noise size
    proj_dim: int  # text embedding is compressed to this size
    ngf: int  # generator base width
    ndf: int  # discriminator base width
    image_size: int
    channels: int = 3
    # Keyword-only, so that it can follow ``channels`` without a default: the field order is the
    # order of the config stored in every checkpoint, and a GAN-CLS file's bytes must not change.
    ca: bool = field(kw_only=True)  # conditioning augmentation (StackGAN): G samples its text code

    def __post_init__(self) -> None:
        blocks_between(self.image_size)

    @property
    def n_blocks(self) -> int:
        """Number of BN blocks between 4x4 and the image."""
        return blocks_between(self.image_size)


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
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        # (B, ngf, 32, 32) -> (B, 3, 64, 64)
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1), nn.Tanh()]
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
        h = torch.cat([z, code], dim=1)  # (B, z_dim + proj_dim)
        return self.net(h[:, :, None, None])  # (B, 3, S, S)

    def forward(self, z: torch.Tensor, emb: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(z, self.condition(emb, eps)[0])


class Discriminator(nn.Module):
    """Matching-aware D(img, emb) -> one logit per image (real *and* matching text)."""

    def __init__(self, cfg: ModelConfig) -> None:
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

        self.proj = TextProjection(cfg.emb_dim, cfg.proj_dim)
        c = widths[-1]  # ndf*8
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
        t = self.proj(emb)  # (B, proj_dim)
        t = t[:, :, None, None].expand(-1, -1, feat.size(2), feat.size(3))  # (B, proj_dim, 4, 4)
        logits = self.joint(torch.cat([feat, t], dim=1)).flatten()  # (B,)
        return (logits, feat) if return_features else logits


def family(arch: str) -> tuple[type, type, type]:
    """The (config, generator, discriminator) classes of model family ``arch`` (``train.arch``)."""
    from t2i.models_df import DFConfig, DFDiscriminator, DFGenerator  # models_df imports this module

    return {"gan-cls": (ModelConfig, Generator, Discriminator), "df-gan": (DFConfig, DFGenerator, DFDiscriminator)}[arch]


def build(arch: str, cfg) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised (G, D) pair of family ``arch`` for its config ``cfg``."""
    _, G, D = family(arch)
    return G(cfg), D(cfg)
