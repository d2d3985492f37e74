"""Typed params: one pydantic model per ``params.yaml`` section.

The models are the single source of defaults and types: ``params.yaml`` repeats them so that a
user sees every knob, and ``tests/test_params.py`` fails when the two disagree. Unknown keys and wrong types stop
with one line naming the key; values that ``dvc exp run -S`` leaves as YAML strings (PyYAML
reads ``1e-05`` as a string) are coerced to the field's type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from t2i import T2IError
from t2i.families import check_arch, get_family

DATASETS = ("synthetic-flowers", "cub", "oxford-102", "hf", "folder")
IMAGE_SIZES = (32, 64, 128)  # what the generator, discriminator and evaluator are built for
AUGMENTATIONS = ("color", "translation", "cutout", "turn")  # train.augment's transforms (t2i/diffaugment.py), applied in this order


def _numeric(annotation) -> bool:
    """int or float, alone or in an optional/union annotation."""
    return annotation in (int, float) or any(a in (int, float) for a in get_args(annotation))


class Section(BaseModel):
    # Non-finite floats (inf, nan) are rejected everywhere; numbers keep pydantic's lax mode so
    # that the YAML strings ``dvc exp run -S`` leaves ("1e-05") still become numbers.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v, info):
        """``true`` is not 1: lax mode would take a bool for a number."""
        if isinstance(v, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {v!r}")
        return v


class SynthParams(Section):
    """Synthetic flowers (the built-in dataset)."""

    num_images: int = Field(3000, ge=1)
    render_size: int = Field(128, ge=16, le=1024)  # raw images; shards are resized from these
    seed: int = 0
    test_fraction: float = Field(0.2, gt=0, le=0.5)  # fraction of classes held out (class-disjoint)


class DownloadParams(Section):
    """Real datasets: where verified source files are kept and how they are fetched and prepared."""

    root: str = Field("data/downloads", min_length=1)  # shared by all datasets, never deleted by a rerun
    mirror: str | None = None  # http(s):// URL or local folder tried first, as <mirror>/<file name>
    md5: dict[str, str] = {}  # file name -> md5: overrides or adds pinned checksums (a mirror's copies)
    retries: int = Field(4, ge=0)  # per location, resuming the partial file each time
    timeout: float = Field(60.0, gt=0)  # seconds without data before a try is abandoned
    backoff: float = Field(1.0, ge=0)  # seconds before the first retry, doubled after each
    captions_per_image: int | None = Field(None, ge=1)  # None: 10 for cub / oxford-102, 1 for hf / folder
    max_missing: float = Field(0.01, ge=0, le=1)  # fraction of images without enough captions tolerated
    test_fraction: float = Field(0.2, gt=0, lt=1)  # hf / folder without a split of their own
    seed: int = 0  # of that split (class-disjoint when there are class labels)

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, v: str | None) -> str | None:
        if v is not None and "://" in v and not v.startswith(("http://", "https://", "file://")):
            raise ValueError(f"mirror must be an http(s):// URL or a local folder, got {v!r}")
        return v

    @field_validator("md5", mode="before")
    @classmethod
    def _digits(cls, v):  # YAML reads an all-digit md5 as an integer, dropping leading zeros
        if isinstance(v, dict):
            return {k: f"{d:032d}" if isinstance(d, int) and 0 <= d < 10**32 else d for k, d in v.items()}
        return v

    @field_validator("md5")
    @classmethod
    def _md5(cls, v: dict[str, str]) -> dict[str, str]:
        for name, digest in v.items():
            if not (isinstance(digest, str) and len(digest) == 32 and all(c in "0123456789abcdefABCDEF" for c in digest)):
                raise ValueError(f"md5 of {name!r} must be 32 hex digits, got {digest!r}")
        return {name: digest.lower() for name, digest in v.items()}


class HFParams(Section):
    """``dataset: hf``: a captioned image dataset read with Hugging Face ``datasets``."""

    name: str | None = None  # hub id, or a folder written by Dataset(Dict).save_to_disk
    config: str | None = None
    revision: str | None = None
    image_column: str = "image"
    caption_column: str = "text"  # a string or a list of strings per row
    class_column: str | None = None  # optional class labels (ClassLabel, int or str)
    train_split: str = "train"
    test_split: str | None = "test"  # None: a seeded split of train_split (download.test_fraction)
    streaming: bool = True  # hub datasets only; a saved folder is memory-mapped anyway


class FolderParams(Section):
    """``dataset: folder``: images with captions in the imagefolder convention."""

    path: str | None = None  # metadata.jsonl (file_name + caption column) or a .txt beside each image
    caption_column: str = "text"
    class_column: str | None = None


class ShardParams(Section):
    image_size: int = 64  # one of IMAGE_SIZES
    image_format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    samples_per_shard: int = Field(1000, ge=1)
    crop: Literal["bbox", "none"] = "bbox"  # bbox: 1.5x the bird's box where a sample has one (CUB)

    @field_validator("image_size")
    @classmethod
    def _trainable(cls, v: int) -> int:
        if v not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))} (the models' sizes), got {v}")
        return v


class EmbedParams(Section):
    model: str = Field("all-MiniLM-L6-v2", min_length=1)  # name, hub id or local folder
    batch_size: int = Field(256, ge=1)
    precision: Literal["fp64", "fp32"] = "fp64"  # the text model's arithmetic: fp64 gives the same bytes on every CPU, fp32 is ~2x faster
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    cache_size: int = Field(100_000, ge=0)  # captions kept across shards to encode repeats once


class GroundParams(Section):
    """The text code grounded in images (t2i/ground.py): a head on the sentence embedding and a
    small image encoder, trained contrastively on the training split (data/grounding/<dataset>)."""

    epochs: int = Field(15, ge=1)
    batch_size: int = Field(128, ge=2)  # more in-batch negatives than the GAN's 64
    lr: float = Field(1e-3, gt=0)  # Adam
    dim: int = Field(128, ge=2)  # the text code's size (what G and D see with train.text: grounded)
    hidden: int = Field(512, ge=1)  # the text head's hidden width
    width: int = Field(32, ge=1)  # the image encoder's base width
    glimpses: int = Field(4, ge=1)  # attention maps over the image's 16x16 cells
    near_miss: int = Field(0, ge=0)  # per image, this many more negatives: captions that miss it on one attribute alone (t2i.named.NearMisses; synthetic-flowers only; 0 = off)
    seed: int = 1  # not the evaluator's 0: the trainer and the scorer share no weights
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int = Field(2, ge=0)  # 0 = torch's default (all cores)


class DFGANParams(Section):
    """DF-GAN's own hyper-parameters (``train.arch: df-gan``): Tao et al. 2022's values, except two
    that fit the default run's CPU budget: the widths (the paper's: ngf = ndf = 32) and D's residual
    gates, which start open (the paper's start them at 0)."""

    ngf: int = Field(16, ge=1)  # generator base width; the paper's (nf, birds) is 32: 7x the CPU time
    ndf: int = Field(8, ge=1)  # discriminator base width; the paper's is 32
    fusion_hidden: int | None = Field(None, ge=1)  # hidden width of the affine MLPs; None: the block's channels
    lr_g: float = Field(1e-4, gt=0)
    lr_d: float = Field(4e-4, gt=0)
    beta1: float = Field(0.0, ge=0, lt=1)
    beta2: float = Field(0.9, ge=0, lt=1)
    magp_coef: float = Field(2.0, ge=0)  # matching-aware gradient penalty weight (0 = off)
    magp_power: float = Field(6.0, gt=0)  # power of the gradient norm in MA-GP
    d_gate: float = Field(1.0, ge=0)  # D blocks' residual gates at the start (the paper's: 0, for far longer runs)


# ``null`` (or missing) for these train keys means the family's own: Reed et al.'s batch of 64,
# DF-GAN's of 32 (its birds recipe); epochs for a CPU budget at the default widths (on a quiet
# 2-core machine GAN-CLS's 30 took 17.5 minutes, DF-GAN's 12 took 9.6: docs/experiments.md); and
# the levers for form measured best for each (docs/experiments.md, "Levers for form"): GAN-CLS
# with a projection D, EMA and DiffAugment; DF-GAN without them (DiffAugment broke its colours; EMA and
# the projection D, one at a time, were no clear gain on one seed: docs/experiments.md, "Fourth round").
FAMILY = {"gan-cls": {"epochs": 30, "batch_size": 64, "d_head": "projection", "ema": 0.999, "augment": "translation,cutout"},
          "df-gan": {"epochs": 12, "batch_size": 32, "d_head": "concat", "ema": 0.0, "augment": ""}}
# The TrainParams keys every family reads (the data order, the batch, the noise, the shared levers,
# the numerics), recorded with the weights; each family adds its own (``Family.reads``: GAN-CLS's
# flat keys, DF-GAN's ``df_gan`` section). Not recorded: how the stage starts (nproc_per_node; the
# record's world_size says what it did) and how often it saves (checkpoint_every).
SHARED = ("epochs", "batch_size", "z_dim", "cls", "captions_per_step", "text", "match_coef", "match_temperature",
          "match_augment", "wrong", "hard_fraction", "hard_max_cos", "ac_coef", "d_contrast_coef", "d_contrast_negatives", "ground_d_coef",
          "d_recon_coef", "r1_coef", "spectral_norm", "g_turn", "d_head", "ema", "augment", "shuffle_buffer", "seed", "device", "precision", "channels_last", "compile", "threads",
          "workers", "sync_bn", "log_every")


# The levers that work outside D's one forward call, and what each does there.
OUTSIDE_D_FORWARD = {"r1_coef": "its input gradient is taken", "ground_d_coef": "its head is called",
                     "d_recon_coef": "its decoder is called"}


class TrainParams(Section):
    """Training: the ``cfg`` of t2i.train.training_loop and t2i.gan.gan_step. ``arch`` picks the
    model family; the keys in ``SHARED`` serve every family, each family reads its own beside them
    (``Family.reads``: GAN-CLS's flat keys from ``lr`` to ``g_upsample``, DF-GAN's ``df_gan``)."""

    arch: str = "gan-cls"  # a registered model family (t2i.families)
    epochs: int = Field(FAMILY["gan-cls"]["epochs"], ge=1)  # null / missing: FAMILY[arch]
    batch_size: int = Field(FAMILY["gan-cls"]["batch_size"], ge=2)  # null / missing: FAMILY[arch]
    lr: float = Field(5e-4, gt=0)  # Reed et al.'s 2e-4 is PLAIN's; 5e-4 learns more per minute (docs/experiments.md, fifth round)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    z_dim: int = Field(100, ge=1)
    proj_dim: int = Field(128, ge=1)
    ngf: int = Field(32, ge=1)  # 32 fits the 2-core CPU budget; Reed et al.'s is 128 (ndf 64)
    ndf: int = Field(32, ge=1)
    cls: bool = True  # matching-aware D (real image + wrong caption -> fake; t2i/wrong.py)
    int_coef: float = Field(1.0, ge=0)  # GAN-INT weight (0 = off)
    int_beta: float = Field(0.5, ge=0, le=1)
    l1_coef: float = Field(0.0, ge=0)  # pixel-wise L1 to the real image (0 = off)
    fm_coef: float = Field(0.0, ge=0)  # D feature matching (0 = off)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # one-sided: real target 1 - value
    ca: bool = False  # conditioning augmentation (StackGAN): text code ~ N(mu(e), sigma(e))
    kl_coef: float = Field(1.0, ge=0)  # weight of CA's KL term to N(0, I) (used when ca)
    ms_coef: float = Field(1.0, ge=0)  # mode-seeking term (MSGAN): two noises per caption (0 = off)
    g_upsample: Literal["deconv", "nearest"] = "deconv"  # G's x2 steps: transposed 4x4 convs, or nearest x2 + 3x3 conv
    captions_per_step: int = Field(1, ge=1)  # mean of this many random captions per image
    text: Literal["sentence", "grounded", "oracle"] = "grounded"  # what G and D see: the sentence embedding, its grounded code (t2i/ground.py), or the one-hot attributes each caption names (t2i/oracle.py: a diagnostic, needs attribute labels)
    match_coef: float = Field(1.0, ge=0)  # G's matching loss through the grounding's image encoder (0 = off)
    match_temperature: float = Field(0.1, gt=0)  # of that loss's softmax over the batch's captions
    match_augment: bool = False  # that loss scores each fake as D sees it (train.augment's draws of the step): one random view
    wrong: Literal["class", "hard"] = "class"  # D's wrong captions (t2i/wrong.py): another class's, or hard ones that do not describe the image
    hard_fraction: float = Field(0.5, ge=0, le=1)  # with wrong: hard, the share that is the most similar such caption
    hard_max_cos: float = Field(0.9, gt=-1, le=1)  # with wrong: hard on free text: no wrong caption this close to the true one
    ac_coef: float = Field(0.0, ge=0)  # AC-GAN attribute heads on D (an upper bound: needs attribute labels; 0 = off)
    d_contrast_coef: float = Field(1.0, ge=0)  # D ranks each real image's own caption over batch captions that do not describe it (0 = off)
    d_contrast_negatives: int = Field(8, ge=1)  # those captions per image: the most similar ones (in what D sees)
    r1_coef: float = Field(0.0, ge=0)  # R1 gradient penalty on D's real pairs (Mescheder et al. 2018), gamma; 0 = off
    spectral_norm: bool = False  # spectral normalisation of every conv and linear layer of the family's D (Miyato et al. 2018)
    ground_d_coef: float = Field(0.0, ge=0)  # a second D on the frozen grounding's image features (Projected GAN), its loss's weight in D's and G's; 0 = off
    d_recon_coef: float = Field(0.0, ge=0)  # D redraws each real image at half size from its own features (FastGAN's self-supervised D), the L1 loss's weight; 0 = off
    g_turn: bool = False  # G draws its S/4 feature map in one pose and turns it by an angle read from its noise (2 pi Phi(z[0])): flowers only, not birds
    d_head: Literal["concat", "projection"] = FAMILY["gan-cls"]["d_head"]  # how D joins the caption to its image features: the family's concatenation | a projection (Miyato & Koyama 2018); null / missing: FAMILY[arch]
    ema: float = Field(FAMILY["gan-cls"]["ema"], ge=0, lt=1)  # decay of the average of G's weights kept beside G (t2i/ema.py), what generator.pt holds; 0 = off; null / missing: FAMILY[arch]
    augment: str = FAMILY["gan-cls"]["augment"]  # DiffAugment of every image D sees (t2i/diffaugment.py): "" (off) or some of "color,translation,cutout,turn"; null / missing: FAMILY[arch]
    shuffle_buffer: int = Field(1000, ge=0)
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # bf16: autocast forward passes, fp32 losses; auto: bf16 on CUDA and on CPUs with bf16 in hardware (t2i.device.cpu_has_bf16), else fp32
    channels_last: bool = True  # NHWC images and conv weights (faster with bf16 on CPUs and GPUs: docs/performance.md)
    compile: bool = False  # torch.compile G and D (the step itself stays eager)
    threads: int = Field(2, ge=0)  # torch CPU threads, 0 = torch's default (all cores)
    workers: int = Field(0, ge=0)  # DataLoader decode processes
    nproc_per_node: int = Field(1, ge=1)  # > 1: the train stage runs itself under torchrun with this many processes
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (all ranks)
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(10, ge=1)
    df_gan: DFGANParams = DFGANParams()

    @field_validator("arch")
    @classmethod
    def _known_family(cls, v: str) -> str:
        return check_arch(v)

    @field_validator("augment")
    @classmethod
    def _known_transforms(cls, v: str) -> str:
        names = [n.strip() for n in v.split(",") if n.strip()]
        if bad := [n for n in names if n not in AUGMENTATIONS]:
            raise ValueError(f"unknown augmentation {bad[0]!r} (known: {', '.join(AUGMENTATIONS)})")
        return ",".join(names)

    def outside_d_forward(self) -> list[str]:
        """The levers on that work outside D's one forward call (``OUTSIDE_D_FORWARD``), which
        DistributedDataParallel cannot see: refused under torchrun, here and in ``training_loop``."""
        return [k for k in OUTSIDE_D_FORWARD if getattr(self, k) > 0]

    @model_validator(mode="after")
    def _the_family_can(self) -> "TrainParams":
        if self.r1_coef > 0 and self.compile:
            raise ValueError("train.r1_coef: its input gradient is taken outside D's one forward call, which "
                             "torch.compile does not support; set train.compile=false or train.r1_coef=0")
        if self.match_augment and not (self.match_coef > 0 and self.augment):
            raise ValueError("train.match_augment: scores the fakes of train.match_coef through train.augment's "
                             f"transforms, but match_coef is {self.match_coef} and augment is {self.augment!r}")
        if self.nproc_per_node > 1 and (levers := self.outside_d_forward()):
            k = levers[0]
            raise ValueError(f"train.{k}: {OUTSIDE_D_FORWARD[k]} outside D's one forward call, which "
                             f"DistributedDataParallel does not support; set train.nproc_per_node=1 or train.{k}=0")
        if self.compile or self.sync_bn:  # only then is the family's module (and torch) imported
            family = get_family(self.arch)
            if self.compile and family.compile_refusal:
                raise ValueError(f"train.compile: not supported with arch {self.arch} ({family.compile_refusal}); "
                                 "set train.compile=false")
            if self.sync_bn and not family.batchnorm:
                raise ValueError(f"train.sync_bn: arch {self.arch} has no BatchNorm to synchronise; "
                                 "set train.sync_bn=false")
        return self

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data):
        if isinstance(data, dict):
            own = FAMILY.get(data.get("arch", "gan-cls"), FAMILY["gan-cls"])  # a bad arch fails later, named
            data = {**data, **{k: v for k, v in own.items() if data.get(k) is None}}
        return data

    def recorded(self) -> dict:
        """The keys stored with the weights, in field order: ``SHARED`` and those the family reads
        (``Family.reads``, and ``arch`` where the family names itself); sync_bn and the levers
        (``LEVERS_OFF``) only when on, so that files of runs without them keep their bytes."""
        family = get_family(self.arch)
        keep = {*SHARED, *family.reads, *(("arch",) if family.names_itself else ())}
        keep -= {k for k, v in LEVERS_OFF.items() if getattr(self, k) == v}
        return {k: v for k, v in self.model_dump().items() if k in keep}

    def with_arch(self, arch: str, **update) -> "TrainParams":
        """These params for family ``arch``, the keys in ``FAMILY`` at that family's own values
        (``model_copy`` would skip the validator that fills them), with ``update`` on top."""
        return TrainParams.model_validate({**self.model_dump(exclude=set(FAMILY[self.arch])), "arch": arch, **update})

    @classmethod
    def from_record(cls, record: dict) -> "TrainParams":
        """The params of a stored record: a lever it lacks was off (``recorded`` leaves off levers
        out, and a record older than a lever never had it), any other key at its default."""
        return cls.model_validate({**LEVERS_OFF, **{k: v for k, v in record.items() if k in cls.model_fields}})


# The levers for what a caption names and for form (docs/experiments.md), as Reed et al.'s plain
# GAN-CLS has them: off. Recorded with the weights only when not these, so that runs without them keep the
# bytes they had.
LEVERS_OFF = {"text": "sentence", "match_coef": 0.0, "match_temperature": 0.1, "match_augment": False, "wrong": "class", "hard_fraction": 0.5,
              "hard_max_cos": 0.9, "ac_coef": 0.0, "d_contrast_coef": 0.0, "d_contrast_negatives": 8, "ground_d_coef": 0.0, "d_recon_coef": 0.0, "g_upsample": "deconv", "r1_coef": 0.0, "spectral_norm": False, "g_turn": False, "d_head": "concat", "ema": 0.0, "augment": "",
              "sync_bn": False}
# The default levers turned off and Reed et al.'s learning rate: the plain GAN-CLS (or DF-GAN) recipe,
# which needs no grounding.
PLAIN = {**{k: LEVERS_OFF[k] for k in ("text", "match_coef", "d_contrast_coef", "d_head", "ema", "augment")}, "lr": 2e-4}


class EvaluatorParams(Section):
    """The fixed evaluator network (trained on real training images only)."""

    epochs: int = Field(20, ge=1)  # 12 left petal count at 0.89 on real test images; 20 reaches 0.99
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int = Field(2, ge=0)  # 0 = torch's default (all cores)
    augment: bool = True
    feat_dim: int = Field(256, ge=8)


class EvaluateParams(Section):
    metrics: list[str] = ["attribute_accuracy", "r_precision", "diversity", "phrasing", "frechet_distance",
                          "inception", "g_check", "d_check", "silhouette"]
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    max_images: int | None = Field(None, ge=2)  # None: the whole test split
    grid_captions: int = Field(8, ge=1)
    grid_noise: int = Field(8, ge=1)
    inception_weights: str | None = None  # local torch-fidelity InceptionV3 weights file
    online: bool = False  # let torch-fidelity download its weights
    device: Literal["cpu", "cuda", "auto"] = "cpu"


class Params(Section):
    dataset: str = "synthetic-flowers"
    synth: SynthParams = SynthParams()
    download: DownloadParams = DownloadParams()
    hf: HFParams = HFParams()
    folder: FolderParams = FolderParams()
    shard: ShardParams = ShardParams()
    embed: EmbedParams = EmbedParams()
    ground: GroundParams = GroundParams()
    train: TrainParams = TrainParams()
    evaluator: EvaluatorParams = EvaluatorParams()
    evaluate: EvaluateParams = EvaluateParams()

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r} (known: {', '.join(DATASETS)})")
        return v

    @model_validator(mode="after")
    def _source_given(self) -> "Params":
        if self.dataset == "hf" and not self.hf.name:
            raise ValueError("hf.name: required when dataset is hf (a hub id or a saved dataset folder)")
        if self.dataset == "folder" and not self.folder.path:
            raise ValueError("folder.path: required when dataset is folder")
        return self


def _set(tree: dict, dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise T2IError(f"bad override {dotted}={raw}: {p} is not a section")
    node[leaf] = yaml.safe_load(raw) if raw != "" else ""


def _format(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        got = "" if e["type"] in ("extra_forbidden", "value_error") else f" (got {e['input']!r})"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{key}: {msg}{got}" if key else f"{msg}{got}")
    return f"{source}: " + "; ".join(parts)


def load_params(path: str | os.PathLike | None = "params.yaml", overrides: list[str] = ()) -> Params:
    """Read ``path`` (None: the built-in defaults; a missing file is an error), apply
    ``key=value`` overrides, validate."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise T2IError(f"params file {path} not found" + (" (a folder)" if path.is_dir() else ""))
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise T2IError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
        if not isinstance(tree, dict):
            raise T2IError(f"{path}: expected a mapping of sections, got {type(tree).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise T2IError(f"bad override {item!r}: expected key=value")
        _set(tree, key.strip(), value)
    try:
        return Params.model_validate(tree)
    except ValidationError as e:
        raise T2IError(_format(e, str(path) if path is not None else "params")) from None
