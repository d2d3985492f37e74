"""What every model family shares: ``Family``, the one interface ``t2i.gan`` trains through,
``StepInputs``, what a step's passes are given, ``Loss``, a loss as named weighted terms, and
``blocks_between``, the depth for an image size.

A step (``t2i.gan.gan_step``) calls a family's three pass modules and hands their outputs, dicts
with the same keys in every family, to the family's losses:

- G's passes, ``g_passes(x)``: {"fake": (B, 3, S, S) images, ...};
- D's passes in D's update, ``d_passes(x, fake)``: {"real": (B,) scores of real images with their
  own captions, "wrong": (B,) of real images with other classes' captions or None, "fake": (B,)
  of the fakes with their captions, "feat_real": (B, C, h, w) D's image features of the real
  images, "feat_fake": those of the fakes or None, ...};
- D's passes in G's update, ``d_fakes(x, g_out)``: {"fake": (B,) scores, "feat_fake": (B, C, h, w), ...};

where ``...`` is the family's own (GAN-CLS's GAN-INT fakes, DF-GAN's gradient penalty "gp").
The passes run under the step's autocast; the losses cast what they use to fp32.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from t2i.losses import contrastive_loss, ranking_loss
from t2i.params import IMAGE_SIZES, TrainParams


def blocks_between(image_size: int) -> int:
    """Up- or downsampling blocks between the 4x4 map and an image of ``image_size`` (one of
    IMAGE_SIZES, the sizes every family is built for): log2(image_size) - 2."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
    return int(math.log2(image_size)) - 2


@dataclass
class StepInputs:
    """A step's inputs (``t2i.gan.step_inputs``): the batch and its random draws, on the device."""

    real: torch.Tensor  # (B, 3, S, S) real images in [-1, 1]
    emb: torch.Tensor  # (B, D) their caption embeddings (the mean of captions_per_step captions)
    wrong: torch.Tensor  # (B, D) caption embeddings of images of other classes
    z: torch.Tensor  # (B, z_dim) noise
    draws: dict[str, torch.Tensor]  # the family's own draws (``Family.draws``), by name
    code: torch.Tensor | None = None  # (B, dim) the grounded text code of the captions, when the run has a grounding
    unlike: torch.Tensor | None = None  # (B, B) bool: item j's captions are a wrong description of item i's image (train.d_contrast_coef)
    agrees: torch.Tensor | None = None  # (B, B) bool: item j's captions ask nothing item i's contradict (t2i.named.agrees)
    labels: torch.Tensor | None = None  # (B, A) long: each real image's attribute values (-1: unknown), with train.ac_coef
    named_labels: torch.Tensor | None = None  # (B, A) long: those its captions name (-1: not named), what G is asked for


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
        """Heads sized for ``D``'s features at ``image_size`` (one forward of a blank image in eval
        mode: no BatchNorm statistics move), as ``D.attribute_heads``."""
        was = D.training
        with torch.no_grad():
            param = next(D.parameters())
            channels = D.eval().features(param.new_zeros(1, 3, image_size, image_size)).shape[1]
        D.train(was)
        D.attribute_heads = cls(channels, attributes).to(param.device)
        return D.attribute_heads

    def labels(self, metas: list[dict], picks: torch.Tensor | None = None) -> torch.Tensor:
        """(B, A) long, in ``attributes`` order: each sample's value index, -1 where it has none
        (``t2i.named.attribute_labels``); with ``picks`` (B, k), where the source says what its
        captions name, only the attributes one of the picked captions names."""
        from t2i.named import attribute_labels

        out = torch.stack(list(attribute_labels(metas, self.attributes).values()), dim=1)  # (B, A)
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
                   heads: AttributeHeads | None) -> Loss:
    """The terms every family's D loss may add to its own:

    - ``contrast`` (``cfg.d_contrast_coef``; XMC-GAN's image-text term for D, on D's own scores):
      D must score each real image with its own caption above the ``cfg.d_contrast_negatives``
      batch captions most like it (in what D sees) that do not describe it (``x.unlike``);
    - ``ac`` (``cfg.ac_coef``; AC-GAN): D's attribute heads classify the real images."""
    if cfg.d_contrast_coef > 0:
        loss.add("contrast", cfg.d_contrast_coef, d_contrast(D, d_out["feat_real"], x.emb, x.unlike,
                                                             cfg.d_contrast_negatives))
    if cfg.ac_coef > 0:
        loss.add("ac", cfg.ac_coef, heads.loss(d_out["feat_real"], x.labels))
    return loss


def d_contrast(D: nn.Module, feat: torch.Tensor, emb: torch.Tensor, unlike: torch.Tensor, k: int) -> torch.Tensor:
    """D's ranking loss (``t2i.losses.ranking_loss``) of real images' features (B, C, h, w) with
    their own captions ``emb`` (B, D) against the ``k`` most similar captions of the batch that
    ``unlike`` (B, B) allows; one ``D.judge`` call over the B * (1 + k) pairs, in fp32."""
    B = len(emb)
    k = min(k, B - 1)
    e = F.normalize(emb.detach().float(), dim=1)
    sim = (e @ e.t()).masked_fill(~unlike, float("-inf"))  # (B, B)
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
                   ground: nn.Module | None, heads: AttributeHeads | None) -> Loss:
    """The terms every family's G loss may add to its own:

    - ``match`` (``cfg.match_coef``; AttnGAN's DAMSM sentence term): the frozen grounding's image
      encoder codes each fake, which is scored against its own caption's grounded code, the
      batch's other captions as negatives (but those that ask nothing its caption contradicts:
      a fake is asked only for what its caption names), at temperature ``cfg.match_temperature``;
    - ``ac`` (``cfg.ac_coef``; AC-GAN): D's attribute heads must read, in each fake, the
      attributes its caption names."""
    if cfg.match_coef > 0:
        img = ground.image(g_out["fake"].float())  # (B, dim); frozen, fp32: the gradient reaches G
        loss.add("match", cfg.match_coef, contrastive_loss(img, x.code, 1 / cfg.match_temperature, x.agrees))
    if cfg.ac_coef > 0:
        loss.add("ac", cfg.ac_coef, heads.loss(d_fakes_out["feat_fake"], x.named_labels))
    return loss


class Family(ABC):
    """A model family: what ``t2i.gan`` needs to train one and ``t2i.checkpoint`` to load its
    generator. Stateless: every method is given the training params ``cfg`` it needs."""

    name: str  # train.arch
    Config: type  # the models' shapes, a dataclass; asdict of it is stored with the weights
    unrecorded: tuple[str, ...]  # TrainParams keys left out of the stored config (those it does not read)
    compile_refusal: str | None = None  # why train.compile is refused; None: it is not
    batchnorm: bool = True  # has BatchNorm for train.sync_bn to synchronise

    @abstractmethod
    def model_config(self, cfg: TrainParams, emb_dim: int, image_size: int):
        """The models' shapes (a ``Config``) for params ``cfg`` on data of ``emb_dim`` and ``image_size``."""

    @abstractmethod
    def generator(self, model_cfg) -> nn.Module:
        """A freshly initialised G(z, emb) -> (B, 3, S, S) images in [-1, 1]."""

    @abstractmethod
    def discriminator(self, model_cfg) -> nn.Module:
        """A freshly initialised D(img, emb) -> (B,) scores, with ``D.features(img)`` -> (B, C, h, w)
        and ``D.judge(features, emb)`` -> (B,) scores (D = judge after features)."""

    def models(self, cfg: TrainParams, model_cfg) -> tuple[nn.Module, nn.Module]:
        """Fresh G and D to train with params ``cfg``, built in that order (both draw their
        initial weights from torch's global RNG)."""
        return self.generator(model_cfg), self.discriminator(model_cfg)

    @abstractmethod
    def optimisers(self, cfg: TrainParams, G: nn.Module, D: nn.Module,
                   **extra) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """G's and D's optimisers; ``extra``: keyword arguments the device asks for (fused=True on CUDA)."""

    @abstractmethod
    def draws(self, cfg: TrainParams, batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """The step's random draws beyond the shared ones, from ``g`` in a fixed order (CPU tensors)."""

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
