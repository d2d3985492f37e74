"""What every model family shares: ``Family``, the one interface ``t2i.gan`` trains through,
``StepInputs``, what a step's passes are given, ``Loss``, a loss as named weighted terms, the
terms every family may add (``shared_d_terms``, ``shared_g_terms``), ``build_discriminator``, the
one way D is built (for training and for ``t2i.checkpoint.load_discriminator`` alike), and the
pieces the families share (``Shapes``, ``adam_pair``, ``scores_fp32``).

A step (``t2i.gan.gan_step``) calls a family's three pass modules and hands their outputs, dicts
with the same keys in every family, to the family's losses:

- G's passes, ``g_passes(x)``: {"fake": (B, 3, S, S) images, ...};
- D's passes in D's update, ``d_passes(x, fake)``: {"real": (B,) scores of real images with their
  own captions, "wrong": (B,) of real images with wrong captions (``t2i.wrong``) or None, "fake": (B,)
  of the fakes with their captions, "feat_real": (B, C, h, w) D's image features of the real
  images, "feat_fake": those of the fakes or None, ...};
- D's passes in G's update, ``d_fakes(x, g_out)``: {"fake": (B,) scores, "feat_fake": (B, C, h, w), ...};

where ``...`` is the family's own (GAN-CLS's GAN-INT fakes, DF-GAN's gradient penalty "gp").
The passes run under the step's autocast; the losses cast what they use to fp32. Every image D
sees reaches its passes through ``StepInputs.seen_by_d`` (``t2i.gan.gan_step`` applies it to the
real images and to the family's ``seen_by_d`` outputs of G), the one place for what D's inputs go
through.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from t2i.losses import contrastive_loss, r1_penalty, ranking_loss
from t2i.params import IMAGE_SIZES, TrainParams
from t2i.wrong import cosines


def blocks_between(image_size: int) -> int:
    """Up- or downsampling blocks between the 4x4 map and an image of ``image_size`` (one of
    IMAGE_SIZES, the sizes every family is built for): log2(image_size) - 2."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
    return int(math.log2(image_size)) - 2


class Shapes:
    """What every family's model config (a dataclass with an ``image_size`` field) shares: the
    size is checked when the config is made, and ``n_blocks`` is its depth. A mixin without
    fields, so each family's fields keep their order (the order of every stored record)."""

    def __post_init__(self) -> None:
        blocks_between(self.image_size)

    @property
    def n_blocks(self) -> int:
        """Up- (G) or downsampling (D) blocks between the 4x4 map and the image."""
        return blocks_between(self.image_size)


def stored_shapes(model_cfg) -> dict:
    """A family's model config (a dataclass) as a checkpoint stores it: a field added after files
    existed (its metadata says ``later=True``) only when it is not at its default, so older files
    keep their bytes and load as they are (the default fills it in)."""
    return {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg)
            if not (f.metadata.get("later") and getattr(model_cfg, f.name) == f.default)}


def turn_by_noise(h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """G's feature maps (B, C, H, W), each turned about its centre by the angle 2 pi Phi(z[i, 0])
    (train.g_turn): uniform over a whole turn when z ~ N(0, I), and a function of the noise, so
    that generation stays deterministic. G draws a flower in one pose; the angle, a nuisance no
    caption names, is not left to its convolutions. Bilinear, corners from the nearest edge, in fp32."""
    angle = math.pi * (1 + torch.erf(z[:, 0].float() / math.sqrt(2)))  # (B,) in [0, 2 pi)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(h.shape), align_corners=False)  # (B, H, W, 2) where each output pixel reads
    return F.grid_sample(h.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(h.dtype)


def adam_pair(G: nn.Module, D: nn.Module, lr_g: float, lr_d: float, betas: tuple[float, float],
              **extra) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for G and for D; ``extra``: what the device asks for (fused=True on CUDA)."""
    return (torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas, **extra),
            torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas, **extra))


def scores_fp32(d_out: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """D's scores of a step's real, wrong (None when off) and fake pairs, in fp32 for the losses."""
    wrong = d_out["wrong"]
    return d_out["real"].float(), None if wrong is None else wrong.float(), d_out["fake"].float()


def spectral_norms(module: nn.Module) -> None:
    """Spectral normalisation (Miyato et al. 2018) of every Conv2d and Linear weight in ``module``:
    each is divided by its largest singular value, estimated by one power iteration per forward
    in training mode (the estimate's first draw comes from torch's global RNG)."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            spectral_norm(m)


def feature_shape(D: nn.Module, image_size: int) -> torch.Size:
    """(C, h, w) of ``D.features`` for images of ``image_size``: one forward of a blank image in
    eval mode, so no BatchNorm statistics move (for the heads attached to D)."""
    was = D.training
    with torch.no_grad():
        param = next(D.parameters())
        shape = D.eval().features(param.new_zeros(1, 3, image_size, image_size)).shape[1:]
    D.train(was)
    return shape


class ProjectionHead(nn.Module):
    """A projection discriminator's head (Miyato & Koyama 2018), for ``train.d_head: projection``:
    image features (B, C, h, w), pooled to phi (B, C), and captions e (B, emb_dim) -> the scores
    psi(phi) + <V e, phi> (B,). The caption moves the score along its own direction in D's feature
    space, where a concatenation head has to learn the pairing through its hidden layer."""

    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.psi = nn.Linear(channels, 1)  # how real the image looks, whatever the caption
        self.embed = nn.Linear(emb_dim, channels, bias=False)  # V: the caption in D's feature space

    def forward(self, feat: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        phi = feat.mean(dim=(2, 3))  # (B, C)
        return self.psi(phi).flatten() + (self.embed(emb) * phi).sum(dim=1)  # (B,)


class GroundHead(nn.Module):
    """A second D on the frozen grounding's image features (``train.ground_d_coef``; Projected GAN,
    Sauer et al. 2021): the grounding's 16x16 cell features (``ImageEncoder.cells``) of an image,
    pretrained on this dataset's real image-caption pairs, -> two strided convolutions ->
    a ``ProjectionHead`` with the grounded text code. Attached to D (``attach``), so D's optimiser,
    checkpoint and ``load_discriminator`` hold it like D's own layers."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.LeakyReLU(0.2),  # (B, 2C, 8, 8)
            nn.Conv2d(2 * channels, 2 * channels, 4, 2, 1), nn.LeakyReLU(0.2),  # (B, 2C, 4, 4)
        )
        self.head = ProjectionHead(2 * channels, dim)

    @classmethod
    def attach(cls, D: nn.Module, shape: dict[str, int]) -> "GroundHead":
        param = next(D.parameters())
        D.ground_head = cls(shape["channels"], shape["dim"]).to(param.device)
        return D.ground_head

    def forward(self, cells: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(cells), code)  # (B, C, 16, 16), (B, dim) -> (B,)


def ground_d_loss(D: nn.Module, ground: nn.Module, real: torch.Tensor, fake: torch.Tensor | None,
                  code: torch.Tensor) -> torch.Tensor:
    """The ground head's non-saturating loss: with ``fake`` (D's update), real -> 1 and fake -> 0;
    without (G's update), ``real`` are G's fakes, which must score 1. Images as D sees them, in fp32."""
    def score(img: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B,)
        return D.ground_head(ground.image.cells(img.float()), code.float())

    loss = F.softplus(-score(real)).mean()
    return loss if fake is None else loss + F.softplus(score(fake)).mean()


class ReconDecoder(nn.Module):
    """FastGAN's self-supervision of D (Liu et al. 2021), for ``train.d_recon_coef``: a small
    decoder that must redraw each real image D saw, at half its size, from D's features alone
    (``D.features``, (B, C, h, w)). D's features must then keep the whole image, its outline and
    parts, where the adversarial loss alone lets D keep whatever tells the few thousand
    training images apart. Attached to D (``attach``), so D's optimiser, checkpoint and
    ``load_discriminator`` hold it like D's own layers; only D's loss uses it."""

    def __init__(self, channels: int, in_size: int, out_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, size = channels, in_size
        while size < out_size:  # GAN-CLS at 64x64: (B, ndf*8, 4, 4) -> (B, ndf*4, 8, 8) -> ... -> (B, ndf, 32, 32)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, max(c // 2, 16), 3, 1, 1),
                       nn.LeakyReLU(0.2)]
            c, size = max(c // 2, 16), size * 2
        layers += [nn.Conv2d(c, 3, 3, 1, 1), nn.Tanh()]  # (B, 3, S/2, S/2)
        self.net = nn.Sequential(*layers)

    @classmethod
    def attach(cls, D: nn.Module, image_size: int) -> "ReconDecoder":
        """A decoder from ``D``'s features at ``image_size`` (``feature_shape``) to half that
        size, as ``D.recon_decoder``."""
        channels, h, _ = feature_shape(D, image_size)
        D.recon_decoder = cls(channels, h, image_size // 2).to(next(D.parameters()).device)
        return D.recon_decoder

    def loss(self, feat: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The mean absolute error of the redrawn images to ``real`` (B, 3, S, S) as D saw them,
        halved in size (2x2 means), in fp32; the gradient reaches D's features."""
        return F.l1_loss(self.net(feat.float()), F.avg_pool2d(real.float(), 2))


def build_discriminator(cfg: TrainParams, model_cfg, attributes: dict[str, list[str]] | None = None,
                        ground_cells: dict[str, int] | None = None) -> nn.Module:
    """D of family ``cfg.arch`` as training builds it and ``t2i.checkpoint.load_discriminator``
    rebuilds it (the one construction path: a lever on D goes here, so that the state dicts of
    both agree): the family's D (with ``cfg.d_head: projection``, its caption head a
    ``ProjectionHead``, which the family builds in place of its own), spectral normalisation
    of its layers (``cfg.spectral_norm``), AC-GAN's heads (``cfg.ac_coef``, labels
    ``attributes``), the ground head (``cfg.ground_d_coef``, for cells ``ground_cells``:
    ``Grounding.cell_shape``) and the decoder that redraws real images (``cfg.d_recon_coef``)."""
    from t2i.families import get_family

    D = get_family(cfg.arch).discriminator(cfg, model_cfg)
    if cfg.spectral_norm:
        spectral_norms(D)
    if cfg.ac_coef > 0:
        if not attributes:
            raise ValueError("train.ac_coef: this dataset's samples have no attribute labels to classify")
        AttributeHeads.attach(D, attributes, model_cfg.image_size)
    if cfg.ground_d_coef > 0:
        if not ground_cells:
            raise ValueError("train.ground_d_coef: the ground head needs the grounding's cell shape")
        GroundHead.attach(D, ground_cells)
    if cfg.d_recon_coef > 0:
        ReconDecoder.attach(D, model_cfg.image_size)
    return D


@dataclass
class StepInputs:
    """A step's inputs (``t2i.gan.step_inputs``): the batch and its random draws, on the device."""

    real: torch.Tensor  # (B, 3, S, S) real images in [-1, 1]
    emb: torch.Tensor  # (B, D) their caption embeddings (the mean of captions_per_step captions)
    wrong: torch.Tensor  # (B, D) each image's wrong caption (t2i.wrong, train.wrong)
    z: torch.Tensor  # (B, z_dim) noise
    draws: dict[str, torch.Tensor]  # the family's own draws (``Family.draws``), by name
    code: torch.Tensor | None = None  # (B, dim) the grounded text code of the captions, when the run has a grounding
    wrong_mask: torch.Tensor | None = None  # (B, B) bool: item j's captions are wrong for item i's image (train.d_contrast_coef)
    agrees: torch.Tensor | None = None  # (B, B) bool: item j's captions ask nothing item i's contradict (t2i.named.agrees)
    labels: torch.Tensor | None = None  # (B, A) long: each real image's attribute values (-1: unknown), with train.ac_coef
    named_labels: torch.Tensor | None = None  # (B, A) long: those its captions name (-1: not named), what G is asked for
    d_draws: dict[str, torch.Tensor] = field(default_factory=dict)  # the draws of what D's inputs go through

    def seen_by_d(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images as D sees them: the hook every image D scores goes through, real
        and fake alike: ``train.augment``'s transforms with this step's ``d_draws``
        (t2i/diffaugment.py); the images themselves when it is off."""
        if not self.d_draws:
            return images
        from t2i.diffaugment import apply

        return apply(images, self.d_draws)


@dataclass
class Loss:
    """A loss as it is built: the total so far and its named terms, unweighted (logged by the
    training loop as d_<name> or g_<name>)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, name: str, weight: float, term: torch.Tensor) -> None:
        """total + weight * term: terms are summed in the order they are added."""
        self.total = self.total + weight * term
        self.parts[name] = term


class AttributeHeads(nn.Module):
    """AC-GAN's auxiliary classifier (Odena et al. 2017) on D's image features: per attribute, a
    linear head on the spatial mean of ``D.features``. It is attached to D (``attach``), so D's
    optimiser, checkpoint and DDP wrapper hold it like D's own layers, in every family."""

    def __init__(self, channels: int, attributes: dict[str, list[str]]) -> None:
        super().__init__()
        self.attributes = {k: [str(v) for v in vs] for k, vs in attributes.items()}
        self.heads = nn.ModuleDict({k: nn.Linear(channels, len(v)) for k, v in self.attributes.items()})

    @classmethod
    def attach(cls, D: nn.Module, attributes: dict[str, list[str]], image_size: int) -> "AttributeHeads":
        """Heads sized for ``D``'s features at ``image_size`` (``feature_shape``), as ``D.attribute_heads``."""
        channels = feature_shape(D, image_size)[0]
        D.attribute_heads = cls(channels, attributes).to(next(D.parameters()).device)
        return D.attribute_heads

    def labels(self, metas: list[dict], picks: torch.Tensor | None = None) -> torch.Tensor:
        """(B, A) long, in ``attributes`` order: each sample's value index, -1 where it has none
        (``t2i.named.label_matrix``); with ``picks`` (B, k), where the source says what its
        captions name, only the attributes one of the picked captions names."""
        from t2i.named import label_matrix

        out = label_matrix(metas, self.attributes)  # (B, A)
        if picks is not None:
            for b, m in enumerate(metas):
                if "named" in m:
                    said = {a for c in picks[b].tolist() for a in m["named"][c]}
                    out[b, [i for i, k in enumerate(self.attributes) if k not in said]] = -1
        return out

    def loss(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The summed cross-entropy of every attribute with a known label; (B, C, h, w) features."""
        pooled = feat.float().mean(dim=(2, 3))  # (B, C)
        out = pooled.new_zeros(())
        for i, (k, head) in enumerate(self.heads.items()):  # every head in every step (DDP), no host sync
            y = labels[:, i]
            out = out + F.cross_entropy(head(pooled), y, ignore_index=-1, reduction="sum") / (y >= 0).sum().clamp(min=1)
        return out


def shared_d_terms(cfg: TrainParams, x: StepInputs, d_out: dict, loss: Loss, D: nn.Module,
                   heads: AttributeHeads | None, fake: torch.Tensor, ground: nn.Module | None) -> Loss:
    """The terms every family's D loss may add to its own, from D's passes on ``x`` (the step's
    inputs as D saw them):

    - ``r1`` (``cfg.r1_coef``, weighted by half of it; Mescheder et al. 2018): the squared norm of
      the gradient of D's scores of the real pairs with respect to the real images;
    - ``contrast`` (``cfg.d_contrast_coef``; XMC-GAN's image-text term for D, on D's own scores):
      D must score each real image with its own caption above the ``cfg.d_contrast_negatives``
      batch captions most like it (in what D sees) that are wrong for it (``x.wrong_mask``);
    - ``ac`` (``cfg.ac_coef``; AC-GAN): D's attribute heads classify the real images;
    - ``ground`` (``cfg.ground_d_coef``): the ground head (``GroundHead``) tells the real images
      from the fakes D saw (``fake``), on the frozen ``ground``'s features, given the grounded code;
    - ``recon`` (``cfg.d_recon_coef``; FastGAN): D's decoder (``ReconDecoder``) redraws the real
      images from D's features of them."""
    if cfg.r1_coef > 0:
        loss.add("r1", cfg.r1_coef / 2, r1_penalty(d_out["real"], x.real))
    if cfg.d_contrast_coef > 0:
        loss.add("contrast", cfg.d_contrast_coef, d_contrast(D, d_out["feat_real"], x.emb, x.wrong_mask,
                                                             cfg.d_contrast_negatives))
    if cfg.ac_coef > 0:
        loss.add("ac", cfg.ac_coef, heads.loss(d_out["feat_real"], x.labels))
    if cfg.ground_d_coef > 0:
        loss.add("ground", cfg.ground_d_coef, ground_d_loss(D, ground, x.real, fake, x.code))
    if cfg.d_recon_coef > 0:
        loss.add("recon", cfg.d_recon_coef, D.recon_decoder.loss(d_out["feat_real"], x.real))
    return loss


def d_contrast(D: nn.Module, feat: torch.Tensor, emb: torch.Tensor, wrong_mask: torch.Tensor, k: int) -> torch.Tensor:
    """D's ranking loss (``t2i.losses.ranking_loss``) of real images' features (B, C, h, w) with
    their own captions ``emb`` (B, D) against the ``k`` most similar captions of the batch that
    are wrong for them (``wrong_mask`` (B, B)); one ``D.judge`` call over the B * (1 + k) pairs, in fp32."""
    B = len(emb)
    k = min(k, B - 1)
    sim = cosines(emb).masked_fill(~wrong_mask, float("-inf"))  # (B, B)
    top, idx = sim.topk(k, dim=1)  # (B, k)
    pairs = torch.cat([emb[:, None], emb[idx]], dim=1).float()  # (B, 1 + k, D)
    with still_statistics(D):  # the pairs are not D's data: its BatchNorm running statistics stay as they are
        scores = D.judge(feat.float().repeat_interleave(k + 1, dim=0), pairs.flatten(0, 1))  # (B * (1 + k),)
    return ranking_loss(scores.view(B, k + 1), top > float("-inf"))


@contextmanager
def still_statistics(module: nn.Module) -> Iterator[None]:
    """Inside, ``module``'s BatchNorm layers normalise by the batch (in training) without moving
    their running statistics (momentum 0), which eval mode (``d_check``, say) reads."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    kept = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, kept):
            m.momentum = momentum


def shared_g_terms(cfg: TrainParams, x: StepInputs, g_out: dict, d_fakes_out: dict, loss: Loss,
                   ground: nn.Module | None, heads: AttributeHeads | None, D: nn.Module | None = None,
                   seen: dict | None = None) -> Loss:
    """The terms every family's G loss may add to its own:

    - ``match`` (``cfg.match_coef``; AttnGAN's DAMSM sentence term): the frozen grounding's image
      encoder codes each fake, which is scored against its own caption's grounded code, the
      batch's other captions as negatives (but those that ask nothing its caption contradicts:
      a fake is asked only for what its caption names), at temperature ``cfg.match_temperature``;
      with ``cfg.match_augment`` each fake as D sees it (``seen``: the step's ``train.augment``
      draws), so that G cannot please the encoder with marks one shift or cut would move;
    - ``ac`` (``cfg.ac_coef``; AC-GAN): D's attribute heads must read, in each fake, the
      attributes its caption names;
    - ``ground`` (``cfg.ground_d_coef``): D's ground head must take the fakes, as D sees them
      (``seen``), for real ones."""
    if cfg.match_coef > 0:
        fake = seen["fake"] if cfg.match_augment else g_out["fake"]  # as D sees it: one random view per step
        img = ground.image(fake.float())  # (B, dim); frozen, fp32: the gradient reaches G
        loss.add("match", cfg.match_coef, contrastive_loss(img, x.code, 1 / cfg.match_temperature, x.agrees))
    if cfg.ac_coef > 0:
        loss.add("ac", cfg.ac_coef, heads.loss(d_fakes_out["feat_fake"], x.named_labels))
    if cfg.ground_d_coef > 0:
        loss.add("ground", cfg.ground_d_coef, ground_d_loss(D, ground, seen["fake"], None, x.code))
    return loss


class Family(ABC):
    """A model family: what ``t2i.gan`` needs to train one and ``t2i.checkpoint`` to load its
    generator. Stateless: every method is given the training params ``cfg`` it needs."""

    name: str  # train.arch
    Config: type  # the models' shapes, a dataclass (with ``Shapes``); ``stored_shapes`` of it is kept with the weights
    reads: tuple[str, ...] = ()  # its own TrainParams keys (a section such as "df_gan", or flat keys), recorded
    # with the weights beside t2i.params.SHARED; no family lists another's keys
    names_itself: bool = True  # its record stores ``arch`` (GAN-CLS's does not: its files predate families)
    seen_by_d: tuple[str, ...] = ("fake",)  # the outputs of G's passes that D scores (through StepInputs.seen_by_d)
    compile_refusal: str | None = None  # why train.compile is refused; None: it is not
    batchnorm: bool = True  # has BatchNorm for train.sync_bn to synchronise

    @abstractmethod
    def model_config(self, cfg: TrainParams, emb_dim: int, image_size: int):
        """The models' shapes (a ``Config``) for params ``cfg`` on data of ``emb_dim`` and ``image_size``."""

    @abstractmethod
    def generator(self, model_cfg) -> nn.Module:
        """A freshly initialised G(z, emb) -> (B, 3, S, S) images in [-1, 1]."""

    @abstractmethod
    def discriminator(self, cfg: TrainParams, model_cfg) -> nn.Module:
        """A freshly initialised D(img, emb) -> (B,) scores, with ``D.features(img)`` -> (B, C, h, w)
        and ``D.judge(features, emb)`` -> (B,) scores (D = judge after features); with
        ``cfg.d_head: projection``, ``judge`` is a ``ProjectionHead`` on the features and the
        family's own caption input. Called through ``build_discriminator`` only."""

    @abstractmethod
    def optimisers(self, cfg: TrainParams, G: nn.Module, D: nn.Module,
                   **extra) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """G's and D's optimisers; ``extra``: keyword arguments the device asks for (fused=True on CUDA)."""

    @abstractmethod
    def draws(self, cfg: TrainParams, batch: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """The step's random draws beyond the shared ones, from ``rng`` in a fixed order (CPU tensors)."""

    @abstractmethod
    def passes(self, cfg: TrainParams, G: nn.Module, D: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The pass modules (g_passes, d_passes, d_fakes) over G's and D's parameters."""

    @abstractmethod
    def d_loss(self, cfg: TrainParams, x: StepInputs, d_out: dict) -> Loss:
        """D's loss from its passes' outputs ``d_out``, in fp32."""

    @abstractmethod
    def g_loss(self, cfg: TrainParams, x: StepInputs, g_out: dict, d_out: dict, d_fakes_out: dict) -> Loss:
        """G's loss, in fp32, from the outputs of G's passes, of D's passes in D's update (its
        features of the real images, say) and of D's passes on the fakes in G's update."""

    def score(self, d: torch.Tensor) -> torch.Tensor:
        """D's outputs as the training log shows them (d_real, d_fake): as they are."""
        return d
