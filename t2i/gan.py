"""One GAN update for any model family (``train.arch``, t2i/families), shared by the training
loop, benchmarks and tests.

``step_inputs`` makes every random choice of a step, in a fixed order, from one ``torch.Generator``
(``rng``): the shared ones, then the family's own, then those of what D's inputs go through.
``gan_step`` does (1) update D, (2) update G for every family and returns detached tensors: no
``.item()``, no I/O, no rank logic and no random numbers inside. ``guard`` checks a loss before
its optimiser steps. Every image D scores goes through ``StepInputs.seen_by_d`` here, and only here.
Each model's forward passes of a step are one module call (the family's pass modules), so that
under torchrun DistributedDataParallel averages the gradients, bucketed and overlapped with the
backward, exactly as for any one-forward model (DF-GAN's MA-GP, a gradient of D's output, itself
differentiated, is taken inside its D passes, so the one backward of D's loss carries it too).
The passes return dicts with the same keys in every family (t2i/families/common.py), so a loss
term shared by all families can read them and join a family's loss with ``Loss.add``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from t2i import T2IError
from t2i.data.loader import to_float
from t2i.ema import Ema
from t2i.families import get_family
from t2i.families.common import (AttributeHeads, Family, StepInputs, build_discriminator, shared_d_terms,
                                 shared_g_terms)
from t2i.modes import frozen
from t2i.params import TrainParams

if TYPE_CHECKING:
    from t2i.ground import Grounding

Guard = Callable[[str, torch.Tensor], None]  # raises before a non-finite loss updates a model


def pick_captions(B: int, C: int, k: int, rng: torch.Generator) -> torch.Tensor:
    """(B, k): the indices of ``k`` distinct random captions of each of B samples with C captions."""
    return torch.rand(B, C, generator=rng).argsort(dim=1)[:, :k]


@dataclass
class Trainables:
    """What a training step updates and calls. ``G`` and ``D`` are the modules to save; the step
    calls the family's three pass modules, which share G's and D's parameters (the first two
    wrapped in DDP under torchrun; all three compiled with ``train.compile``, each one stable graph)."""

    family: Family
    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    g_passes: nn.Module  # x -> {"fake": images, ...}
    d_passes: nn.Module  # x, fake -> D's scores and features of the real and fake pairs
    d_fakes: nn.Module  # x, g_out -> D's scores and features of the fakes in G's update (outside DDP: D is not updated there)
    ground: Grounding | None = None  # the frozen grounding (t2i.ground), when the run uses its code, its matching loss or the ground head
    heads: AttributeHeads | None = None  # AC-GAN's attribute heads on D (``D.attribute_heads``), with train.ac_coef
    G_ema: Ema | None = None  # the average of G's weights (train.ema), updated after each of G's steps
    oracle: dict[str, list[str]] | None = None  # with train.text: oracle, the attributes' values the codes are made of

    @property
    def G_out(self) -> nn.Module:
        """The generator a run shows and saves in generator.pt: the average with train.ema, else G."""
        return self.G if self.G_ema is None else self.G_ema.module


def model_config(cfg: TrainParams, emb_dim: int, image_size: int):
    """The models' shapes for training params ``cfg`` on data of ``emb_dim`` and ``image_size``."""
    return get_family(cfg.arch).model_config(cfg, emb_dim, image_size)


def trainables(cfg: TrainParams, model_cfg, device: str = "cpu", world: int = 1,
               ground: Grounding | None = None, attributes: dict[str, list[str]] | None = None) -> Trainables:
    """Fresh G and D of family ``cfg.arch`` (seeded by ``cfg.seed``), its optimisers (fused on
    CUDA), and the passes the step calls; with ``world`` > 1, wrapped in
    DistributedDataParallel (with ``cfg.sync_bn``, BatchNorm statistics over all ranks' batches).
    ``ground``: the grounding that ``cfg.text: grounded``, ``cfg.match_coef`` and ``cfg.ground_d_coef`` need (frozen);
    ``attributes``: {attribute: values}, the labels of AC-GAN's heads (``cfg.ac_coef``)."""
    if needs_grounding(cfg) and ground is None:
        raise T2IError("train.text: grounded, train.match_coef and train.ground_d_coef need the grounding (data/grounding/<dataset>): "
                       "run the ground stage first")
    if cfg.ac_coef > 0 and not attributes:
        raise T2IError("train.ac_coef: this dataset's samples have no attribute labels to classify")
    if cfg.text == "oracle" and not attributes:
        raise T2IError("train.text: oracle: this dataset's samples have no attribute labels to condition on")
    family = get_family(cfg.arch)
    torch.manual_seed(cfg.seed)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # the step's shapes never change: let cuDNN pick its fastest kernels
    G = family.generator(model_cfg).to(device)  # G's initial weights are drawn first, then D's (torch's global RNG)
    D = build_discriminator(cfg, model_cfg, attributes, ground.cell_shape if cfg.ground_d_coef > 0 else None).to(device)
    if cfg.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    heads = D.attribute_heads if cfg.ac_coef > 0 else None
    if world > 1 and cfg.sync_bn:  # BatchNorm over the global batch; before the optimisers take the parameters
        from t2i.distributed import sync_batchnorm

        G, D = sync_batchnorm(G), sync_batchnorm(D)
    opt_g, opt_d = family.optimisers(cfg, G, D, **({"fused": True} if cuda else {}))
    g_passes, d_passes, d_fakes = family.passes(cfg, G, D)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Buffers (BatchNorm running stats) are averaged at every checkpoint instead of being
        # broadcast from rank 0 before every forward (t2i.run_state).
        ids = [torch.device(device).index] if cuda else None
        g_passes, d_passes = (DDP(m, device_ids=ids, broadcast_buffers=False) for m in (g_passes, d_passes))
    if cfg.compile:
        g_passes, d_passes, d_fakes = (torch.compile(m) for m in (g_passes, d_passes, d_fakes))
    if ground is not None:
        ground = ground.to(device).eval().requires_grad_(False)
    return Trainables(family, G, D, opt_g, opt_d, g_passes, d_passes, d_fakes,
                      ground if needs_grounding(cfg) else None, heads, Ema(G, cfg.ema) if cfg.ema > 0 else None,
                      attributes if cfg.text == "oracle" else None)


def needs_grounding(cfg: TrainParams) -> bool:
    """Does a run with params ``cfg`` read the grounding (t2i/ground.py)?"""
    return cfg.text == "grounded" or cfg.match_coef > 0 or cfg.ground_d_coef > 0


def autocast(cfg: TrainParams, device: torch.device | str):
    """The forward passes' precision: bf16 autocast when ``cfg.precision`` asks for it (auto: on CUDA and on
    CPUs with bf16 in hardware, ``t2i.device.pick_precision``)."""
    from t2i.device import pick_precision

    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=pick_precision(cfg.precision, kind) == "bf16")


def step_inputs(batch: dict, cfg: TrainParams, rng: torch.Generator, device: str = "cpu",
                nets: Trainables | None = None) -> StepInputs:
    """A loader batch -> the inputs of one step, with every random draw taken from ``rng`` (on
    the CPU, in a fixed order: the shared draws, the family's, then those of D's inputs). On CUDA
    the uint8 images go up as they are and become floats there, and the draws go up in one
    pinned, non-blocking copy per dtype. ``nets``: the run's trainables, where it has a grounding
    (its text code of the picked captions is ``code``, and with ``cfg.text: grounded`` also what
    G and D see) or attribute heads (the labels of the real images and of what their captions name)."""
    from t2i.wrong import pick_wrong_class, pick_wrong_hard, wrong_mask

    ground, heads = (nets.ground, nets.heads) if nets is not None else (None, None)
    B, C, _ = batch["emb"].shape
    picks = pick_captions(B, C, cfg.captions_per_step, rng)  # (B, k)
    raw = batch["emb"][torch.arange(B)[:, None], picks]  # (B, k, D)
    emb = raw.mean(dim=1)  # (B, D)
    if cfg.text == "oracle":  # what the picked captions name, one-hot (t2i/oracle.py)
        from t2i import oracle

        if nets is None or nets.oracle is None:
            raise T2IError("train.text: oracle: step_inputs needs the run's trainables (their attribute values)")
        emb = oracle.codes(batch["meta"], picks, nets.oracle)  # (B, code_size)
    fit = agree = mask = None
    if cfg.wrong == "hard" or cfg.d_contrast_coef > 0:  # which captions describe which image
        from t2i.named import fits, knows_named

        fit = fits(batch["meta"], picks, batch["captions"])
        max_cos = None if knows_named(batch["meta"]) else cfg.hard_max_cos
        if cfg.d_contrast_coef > 0:
            mask = wrong_mask(fit, emb, max_cos)
    if cfg.match_coef > 0:
        from t2i.named import agrees

        agree = agrees(batch["meta"], picks, batch["captions"])
    if cfg.wrong == "hard":
        wrong = pick_wrong_hard(fit, emb, cfg.hard_fraction, rng, max_cos)  # (B,)
    else:
        wrong = pick_wrong_class(batch["class_id"], rng)  # (B,) index of another class's caption
    z = torch.randn(B, cfg.z_dim, generator=rng)
    draws = get_family(cfg.arch).draws(cfg, B, rng)
    d_draws = {}
    if cfg.augment:  # what every image D sees goes through (StepInputs.seen_by_d)
        from t2i import diffaugment

        d_draws = diffaugment.draws(cfg.augment, B, batch["image"].size(-1), rng)
    fixed = [batch["image"], emb, wrong, z, *draws.values(), *d_draws.values()]
    extra = []  # what only some levers need, uploaded with the rest
    if ground is not None:
        extra.append(raw)
    if heads is not None:
        extra += [heads.labels(batch["meta"]), heads.labels(batch["meta"], picks)]
    image, emb, wrong, z, *rest = upload(fixed + extra, device)
    own, rest = dict(zip(draws, rest[:len(draws)])), rest[len(draws):]
    d_draws, rest = dict(zip(d_draws, rest[:len(d_draws)])), rest[len(d_draws):]
    code = labels = named = None
    if ground is not None:
        with torch.no_grad():
            code = ground.text(rest.pop(0)).mean(dim=1)  # (B, dim)
        if cfg.text == "grounded":
            emb = code
    if heads is not None:
        labels, named = rest
    real = to_float(image)  # (B, 3, H, W) in [-1, 1]
    if cfg.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    on = real.device
    return StepInputs(real, emb, emb[wrong], z, own, code=code,
                      wrong_mask=None if mask is None else mask.to(on), agrees=None if agree is None else agree.to(on),
                      labels=labels, named_labels=named, d_draws=d_draws)


def upload(tensors: list[torch.Tensor], device: str) -> list[torch.Tensor]:
    """CPU tensors -> ``device``: as they are on the CPU; elsewhere in one non-blocking copy from
    pinned memory per dtype, returned as views of those buffers."""
    if torch.device(device).type == "cpu":
        return list(tensors)
    out = list(tensors)
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        at = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        flat = torch.cat([tensors[i].reshape(-1) for i in at]) if len(at) > 1 else tensors[at[0]].reshape(-1)
        if not flat.is_pinned():  # the loader's batches come pinned with workers
            flat = flat.pin_memory()
        flat = flat.to(device, non_blocking=True)
        offset = 0
        for i in at:
            out[i] = flat[offset:offset + tensors[i].numel()].view_as(tensors[i])
            offset += tensors[i].numel()
    return out


def gan_step(nets: Trainables, x: StepInputs, cfg: TrainParams, *, guard: Guard | None = None) -> dict[str, torch.Tensor]:
    """(1) update D, (2) update G; the step's losses, their named parts (g_<name>, d_<name>) and
    D's mean outputs (as the family shows them: GAN-CLS probabilities, DF-GAN raw scores),
    detached. Under DDP the gradients are averaged across ranks during each backward. D's passes
    are given the images as D sees them (``x.seen_by_d``); the losses, the inputs themselves."""
    family, on = nets.family, x.real.device
    x_d = replace(x, real=x.seen_by_d(x.real)) if x.d_draws else x  # what D's passes are given
    if cfg.r1_coef > 0:  # R1 differentiates D's real scores with respect to the images D saw
        x_d = replace(x_d, real=x_d.real.detach().requires_grad_(True))
    with autocast(cfg, on):
        g_out = nets.g_passes(x)  # {"fake": (B, 3, S, S), ...}; G is not updated before (2)

    # (1) update D
    fake_d = x.seen_by_d(g_out["fake"].detach())
    with autocast(cfg, on):
        d_out = nets.d_passes(x_d, fake_d)  # D on the real and the fake pairs
    loss_d = shared_d_terms(cfg, x_d, d_out, family.d_loss(cfg, x, d_out), nets.D, nets.heads, fake_d, nets.ground)
    nets.opt_d.zero_grad(set_to_none=True)
    loss_d.total.backward()
    if guard is not None:
        guard("loss_d", loss_d.total)
    nets.opt_d.step()

    # (2) update G (against the updated D; D's weight gradients are not needed here)
    with frozen(nets.D):
        seen = {**g_out, **{k: x.seen_by_d(g_out[k]) for k in family.seen_by_d if k in g_out}}
        with autocast(cfg, on):
            d_fakes_out = nets.d_fakes(x_d, seen)  # the updated D on the fakes
        loss_g = shared_g_terms(cfg, x, g_out, d_fakes_out, family.g_loss(cfg, x, g_out, d_out, d_fakes_out),
                                nets.ground, nets.heads, nets.D, seen)
        nets.opt_g.zero_grad(set_to_none=True)
        loss_g.total.backward()
    if guard is not None:
        guard("loss_g", loss_g.total)
    nets.opt_g.step()
    if nets.G_ema is not None:
        nets.G_ema.update(nets.G)
    score = family.score
    return {"loss_d": loss_d.total.detach(), "loss_g": loss_g.total.detach(),
            "d_real": score(d_out["real"].float()).mean().detach(),
            "d_fake": score(d_fakes_out["fake"].float()).mean().detach(),
            **{f"g_{k}": v.detach() for k, v in loss_g.parts.items()},
            **{f"d_{k}": v.detach() for k, v in loss_d.parts.items()}}
