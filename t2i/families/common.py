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
from dataclasses import dataclass, field

import torch
from torch import nn

from t2i.losses import contrastive_loss
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
    fits: torch.Tensor | None = None  # (B, B) bool: item j's captions describe item i's image (t2i.named.fits)


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


def shared_d_terms(cfg: TrainParams, x: StepInputs, d_out: dict, loss: Loss) -> Loss:
    """The terms every family's D loss may add to its own (none yet: the place for them)."""
    return loss


def shared_g_terms(cfg: TrainParams, x: StepInputs, g_out: dict, loss: Loss, ground: nn.Module | None) -> Loss:
    """The terms every family's G loss may add to its own:

    - ``match`` (``cfg.match_coef``; AttnGAN's DAMSM sentence term): the frozen grounding's image
      encoder codes each fake, which is scored against its own caption's grounded code, the
      batch's other captions as negatives (but those that describe it just as well), at
      temperature ``cfg.match_temperature``."""
    if cfg.match_coef > 0:
        img = ground.image(g_out["fake"])  # (B, dim); the encoder is frozen, the gradient reaches G
        loss.add("match", cfg.match_coef, contrastive_loss(img, x.code, 1 / cfg.match_temperature, x.fits))
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
        """A freshly initialised D(img, emb) -> (B,) scores, with ``D.features(img)`` -> (B, C, h, w)."""

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
