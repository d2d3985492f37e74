"""A model family is one module: a toy third family, defined only here, trains through the same
step, loop and checkpoints as the built-in ones; the families' pass outputs share their keys; the
registry names what it knows; and no t2i module imports itself back at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2i import T2IError
from t2i.checkpoint import GENERATOR, load_generator
from t2i.families import BUILT_IN, FAMILIES, get_family, register_family
from t2i.families.common import Family, Loss, StepInputs
from t2i.gan import gan_step, model_config, step_inputs, trainables
from t2i.params import SHARED, TrainParams, load_params

from tests.conftest import REPO
from tests.test_train import DATA, TINY

# --------------------------------------------------------------------------- a toy family


@dataclass
class ToyConfig:
    emb_dim: int
    z_dim: int
    image_size: int
    width: int


class ToyGenerator(nn.Module):
    """G(z, emb): one linear map to the image."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(cfg.z_dim + cfg.emb_dim, 3 * cfg.image_size ** 2)

    def forward(self, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        S = self.cfg.image_size
        return torch.tanh(self.fc(torch.cat([z, emb], dim=1))).view(-1, 3, S, S)  # (B, 3, S, S)


class ToyDiscriminator(nn.Module):
    """D(img, emb): one strided conv for features, a linear head on them and the caption."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, cfg.width, 4, 4)  # (B, width, S/4, S/4)
        self.head = nn.Linear(cfg.width + cfg.emb_dim, 1)

    def features(self, img: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(img), 0.2)

    def forward(self, img: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        pooled = self.features(img).mean(dim=(2, 3))  # (B, width)
        return self.head(torch.cat([pooled, emb], dim=1)).flatten()  # (B,)


class ToyGeneratorPasses(nn.Module):
    def __init__(self, G: ToyGenerator) -> None:
        super().__init__()
        self.G = G

    def forward(self, x: StepInputs) -> dict:
        return {"fake": self.G(x.z, x.emb), "fake_alt": self.G(x.draws["z_alt"], x.emb)}


class ToyDiscriminatorPasses(nn.Module):
    def __init__(self, D: ToyDiscriminator) -> None:
        super().__init__()
        self.D = D

    def forward(self, x: StepInputs, fake: torch.Tensor) -> dict:
        return {"real": self.D(x.real, x.emb), "wrong": self.D(x.real, x.wrong), "fake": self.D(fake, x.emb),
                "feat_real": self.D.features(x.real), "feat_fake": None}


class ToyDiscriminatorOnFakes(nn.Module):
    def __init__(self, D: ToyDiscriminator) -> None:
        super().__init__()
        self.D = D

    def forward(self, x: StepInputs, g_out: dict) -> dict:
        return {"fake": self.D(g_out["fake"], x.emb), "feat_fake": self.D.features(g_out["fake"])}


class Toy(Family):
    """Least squares GAN with a matching-aware term, feature matching and a spread term."""

    name = "toy"
    Config = ToyConfig
    reads = ("lr",)  # a key GAN-CLS reads too: reading it takes nothing from GAN-CLS

    def model_config(self, cfg, emb_dim, image_size):
        return ToyConfig(emb_dim=emb_dim, z_dim=cfg.z_dim, image_size=image_size, width=4)

    def generator(self, model_cfg):
        return ToyGenerator(model_cfg)

    def discriminator(self, cfg, model_cfg):
        return ToyDiscriminator(model_cfg)

    def optimisers(self, cfg, G, D, **extra):
        return torch.optim.SGD(G.parameters(), lr=cfg.lr, **extra), torch.optim.SGD(D.parameters(), lr=cfg.lr, **extra)

    def draws(self, cfg, batch, g):
        return {"z_alt": torch.randn(batch, cfg.z_dim, generator=g)}

    def passes(self, cfg, G, D):
        return ToyGeneratorPasses(G), ToyDiscriminatorPasses(D), ToyDiscriminatorOnFakes(D)

    def d_loss(self, cfg, x, d_out):
        loss = Loss((d_out["real"] - 1).pow(2).mean() + d_out["fake"].pow(2).mean())
        loss.add("wrong", 0.5, d_out["wrong"].pow(2).mean())
        return loss

    def g_loss(self, cfg, x, g_out, d_out, d_fakes_out):
        adv = (d_fakes_out["fake"] - 1).pow(2).mean()
        loss = Loss(adv, {"adv": adv})
        fm = (d_out["feat_real"].detach().mean(0) - d_fakes_out["feat_fake"].mean(0)).pow(2).mean()
        loss.add("fm", 2.0, fm)
        loss.add("spread", 0.01, -(g_out["fake"] - g_out["fake_alt"]).abs().mean())
        return loss


@pytest.fixture
def toy():
    register_family(Toy())
    yield FAMILIES["toy"]
    del FAMILIES["toy"]


def batch(B: int = 8, S: int = 32, D: int = 16) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randint(0, 256, (B, 3, S, S), generator=g, dtype=torch.uint8),
            "emb": torch.randn(B, 10, D, generator=g), "class_id": torch.arange(B) % 3}


def test_a_family_registered_in_a_test_trains_a_step(toy):
    cfg = TrainParams(**{**TINY, "arch": "toy"})
    assert get_family("toy") is toy and cfg.recorded()["arch"] == "toy"
    t = trainables(cfg, model_config(cfg, 16, 32))
    assert isinstance(t.G, ToyGenerator) and isinstance(t.opt_g, torch.optim.SGD)
    x = step_inputs(batch(), cfg, torch.Generator().manual_seed(0))
    assert x.draws.keys() == {"z_alt"} and x.draws["z_alt"].shape == (8, cfg.z_dim)
    before = [p.clone() for p in (*t.G.parameters(), *t.D.parameters())]
    out = gan_step(t, x, cfg)
    assert all(not torch.equal(a, b) for a, b in zip(before, (*t.G.parameters(), *t.D.parameters())))
    assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake", "g_adv", "g_fm", "g_spread", "d_wrong"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.values())
    torch.testing.assert_close(out["loss_g"], out["g_adv"] + 2.0 * out["g_fm"] + 0.01 * out["g_spread"])


def test_a_family_registered_in_a_test_trains_and_saves_through_the_loop(toy, train_urls, tmp_path):
    from t2i.train import training_loop

    summary = training_loop(train_urls, tmp_path, TrainParams(**{**TINY, "arch": "toy", "epochs": 1}), data=DATA,
                            progress=False)
    assert summary["steps"] > 0 and "g_spread" in summary
    G, config = load_generator(tmp_path / GENERATOR)
    assert isinstance(G, ToyGenerator) and config["arch"] == "toy" and config["model"]["width"] == 4
    assert config["lr"] == 2e-4 and not {"df_gan", "ngf", "ms_coef"} & set(config)  # what it reads, only
    assert set(config) - {"num_samples", "emb_dim", "image_size", "text_model", "model", "world_size"} <= {
        *SHARED, "arch", "lr"}


# --------------------------------------------------------------------------- the registry


def test_an_unknown_family_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model family 'stylegan' \(known: gan-cls, df-gan\)"):
        get_family("stylegan")
    with pytest.raises(T2IError) as e:
        load_params(None, ["train.arch=stylegan"])
    assert str(e.value) == "params: train.arch: unknown model family 'stylegan' (known: gan-cls, df-gan)"
    with pytest.raises(ValueError, match="already registered"):
        register_family(get_family("gan-cls"))


def test_the_families_capabilities_decide_what_params_refuse():
    with pytest.raises(T2IError, match=r"train.sync_bn: arch df-gan has no BatchNorm to synchronise"):
        load_params(None, ["train.arch=df-gan", "train.sync_bn=true"])
    assert load_params(None, ["train.sync_bn=true", "train.compile=true"]).train.compile


# --------------------------------------------------------------------------- the passes' keys


@pytest.mark.parametrize("arch", BUILT_IN)
def test_the_pass_outputs_have_the_same_keys_in_every_family(arch):
    cfg = TrainParams(**{**TINY, "arch": arch, "df_gan": {"ngf": 4, "ndf": 4}})
    t = trainables(cfg, model_config(cfg, 16, 32))
    x = step_inputs(batch(), cfg, torch.Generator().manual_seed(0))
    g_out = t.g_passes(x)
    d_out = t.d_passes(x, g_out["fake"].detach())
    d_fakes_out = t.d_fakes(x, g_out)
    assert g_out["fake"].shape == (8, 3, 32, 32)
    assert {"real", "wrong", "fake", "feat_real", "feat_fake"} <= d_out.keys()
    assert {"fake", "feat_fake"} <= d_fakes_out.keys()
    for scores in (d_out["real"], d_out["wrong"], d_out["fake"], d_fakes_out["fake"]):
        assert scores.shape == (8,)
    feat = d_out["feat_real"]
    assert feat.dim() == 4 and feat.size(0) == 8
    assert d_out["feat_fake"].shape == d_fakes_out["feat_fake"].shape == feat.shape
    t.D.eval()  # what a diagnostic calls: D's scores and features of any images
    img, emb = torch.randn(5, 3, 32, 32), torch.randn(5, 16)
    assert t.D(img, emb).shape == (5,) and t.D.features(img).shape[:2] == (5, feat.size(1))


# --------------------------------------------------------------------------- no import circle


def module_level_imports(path) -> set[str]:
    """The t2i modules the file at ``path`` imports as it is imported (the top level and its
    if/try blocks, not function bodies or ``if TYPE_CHECKING``), with the packages above them.
    (t2i has no relative imports.)"""
    found: set[str] = set()

    def visit(body) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: a relative import"
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)  # kept if a module
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body), visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body), visit(node.orelse), visit(node.finalbody)

    visit(ast.parse(path.read_text()).body)
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    return {m for m in found | parents if m.split(".")[0] == "t2i"}


def test_no_t2i_module_imports_itself_back():
    """Among t2i's modules, as they are imported. A module's own packages are left out of what it
    imports: Python imports them first anyway, and a package may import its submodules to register
    them (t2i.metrics)."""
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (REPO / "t2i").rglob("*.py")}

    def ancestors(name: str) -> set[str]:
        return {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}

    graph = {name: module_level_imports(path) & files.keys() - ancestors(name) for name, path in files.items()}
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name):] + [name]))
        if name not in done:
            for other in sorted(graph[name]):
                walk(other, path + [name])
            done.add(name)

    for name in sorted(graph):
        walk(name, [])
    assert graph["t2i.families"] == set()  # the registry imports no t2i module: t2i.params imports it


@pytest.mark.parametrize("module, arch", [("t2i.families.gan_cls", "gan-cls"), ("t2i.families.df_gan", "df-gan")])
def test_each_family_module_imports_first_in_a_fresh_process(module, arch):
    code = f"import {module}; from t2i.families import get_family; assert get_family({arch!r}).name == {arch!r}"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_params_check_the_family_without_torch():
    code = ("import sys, t2i.params as p; p.load_params(None, ['train.arch=df-gan']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- resume, one D path


class FlaggedToy(Toy):
    """The toy with a D lever of its own: ``ms_coef`` > 0 (a key it reads) adds a layer to D."""

    name = "toy"
    reads = ("lr", "ms_coef")
    built_by: list[str] = []

    def discriminator(self, cfg, model_cfg):
        import inspect

        self.built_by.append(inspect.stack()[1].function)
        D = ToyDiscriminator(model_cfg)
        if cfg.ms_coef > 0:
            D.extra = nn.Linear(1, 1)
        return D


@pytest.fixture
def flagged():
    register_family(FlaggedToy())
    FlaggedToy.built_by.clear()
    yield FAMILIES["toy"]
    del FAMILIES["toy"]


def test_a_family_registered_in_a_test_resumes_to_the_same_bytes(flagged, train_urls, tmp_path):
    from t2i.checkpoint import CHECKPOINT
    from t2i.train import training_loop

    cfg = TrainParams(**{**TINY, "arch": "toy", "checkpoint_every": 2, "ms_coef": 0.5})
    training_loop(train_urls, tmp_path / "full", cfg, data=DATA, progress=False)

    def crash(step, G, D):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training_loop(train_urls, tmp_path / "cut", cfg, data=DATA, progress=False, on_step=crash)
    assert training_loop(train_urls, tmp_path / "cut", cfg, data=DATA, progress=False)["resumed"]
    for name in (GENERATOR, CHECKPOINT):  # every value (not the bytes: pickle shares a string once read back)
        assert equal(torch.load(tmp_path / "full" / name, weights_only=False),
                     torch.load(tmp_path / "cut" / name, weights_only=False))


def equal(a, b) -> bool:
    """Nested dicts, lists and tensors: the same keys, values and tensor bytes."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def test_training_and_load_discriminator_build_d_the_same_way(flagged, train_urls, tmp_path):
    """D's construction has one path: a D trained with the family's flag on loads back, flag and all."""
    from t2i.checkpoint import CHECKPOINT, load_discriminator
    from t2i.train import training_loop

    cfg = TrainParams(**{**TINY, "arch": "toy", "epochs": 1, "ms_coef": 0.5})
    training_loop(train_urls, tmp_path, cfg, data=DATA, progress=False)
    D = load_discriminator(tmp_path / CHECKPOINT)
    assert isinstance(D.extra, nn.Linear) and not D.training
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)["D"]
    assert all(torch.equal(v, saved[k]) for k, v in D.state_dict().items())
    assert FlaggedToy.built_by == ["build_discriminator", "build_discriminator"]  # training, then loading


def test_every_train_key_is_shared_read_by_a_family_or_deliberately_unrecorded():
    """A new TrainParams key must say who reads it (SHARED or a family's ``reads``), or it would be
    missing from every record and resume would not see it change."""
    read = {k for arch in BUILT_IN for k in get_family(arch).reads}
    assert set(TrainParams.model_fields) - set(SHARED) - read == {"arch", "checkpoint_every", "nproc_per_node"}
    assert not set(get_family("gan-cls").reads) & set(get_family("df-gan").reads)


@pytest.mark.parametrize("arch", BUILT_IN)
def test_spectral_norm_keeps_each_layer_of_d_near_one_and_loads_back(arch, train_urls, tmp_path):
    from t2i.checkpoint import CHECKPOINT, load_discriminator
    from t2i.train import training_loop

    cfg = TrainParams(**{**TINY, "arch": arch, "df_gan": {"ngf": 4, "ndf": 4}, "spectral_norm": True, "epochs": 2})
    training_loop(train_urls, tmp_path, cfg, data=DATA, progress=False)
    D = load_discriminator(tmp_path / CHECKPOINT)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    sigma = [torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item() for m in layers]
    assert all(0.9 < s < 1.1 for s in sigma), sigma
    raw = [torch.linalg.matrix_norm(m.parametrizations.weight.original.detach().flatten(1), ord=2).item()
           for m in layers]
    assert any(abs(s - 1) > 0.1 for s in raw)  # the normalisation, not the weights, keeps them at one


@pytest.mark.parametrize("arch", BUILT_IN)
def test_a_projection_d_scores_an_image_higher_with_its_own_caption_after_a_few_steps(arch, train_urls):
    """train.d_head: projection replaces the family's caption head, and after 90 steps on the tiny
    set D scores real images with their own captions above the same images with other classes'."""
    from t2i.data.loader import batches
    from t2i.families.common import ProjectionHead

    cfg = TrainParams(**{**TINY, "arch": arch, "df_gan": {"ngf": 4, "ndf": 8}, "d_head": "projection"})
    nets = trainables(cfg, model_config(cfg, DATA.emb_dim, DATA.image_size))
    assert isinstance(nets.D.head, ProjectionHead) and not hasattr(nets.D, "joint")
    rng = torch.Generator().manual_seed(0)
    data = list(batches(train_urls, cfg.batch_size))

    def margin() -> float:  # mean over the set of D(image, own caption) - D(image, another class's)
        with torch.no_grad():
            nets.D.eval()
            xs = [step_inputs(b, cfg, torch.Generator().manual_seed(1)) for b in data]
            out = torch.cat([nets.D(x.real, x.emb) - nets.D(x.real, x.wrong) for x in xs]).mean().item()
            nets.D.train()
        return out

    before = margin()
    for step in range(90):
        gan_step(nets, step_inputs(data[step % len(data)], cfg, rng), cfg)
    after = margin()
    assert after > 0.1 and after > before + 0.1, (before, after)


@pytest.mark.parametrize("arch", BUILT_IN)
def test_ds_decoder_learns_to_redraw_real_images_from_ds_features_and_loads_back(arch, train_urls, tmp_path):
    """train.d_recon_coef (FastGAN's self-supervised D): a decoder on D's features redraws the real
    images D saw at half size; its L1 loss is D's ``recon`` term, its gradient reaches D's first
    layer, it falls over 60 steps on the tiny set, and load_discriminator rebuilds the decoder."""
    from t2i.checkpoint import CHECKPOINT, load_discriminator
    from t2i.data.loader import batches
    from t2i.families.common import ReconDecoder
    from t2i.train import training_loop

    cfg = TrainParams(**{**TINY, "arch": arch, "df_gan": {"ngf": 4, "ndf": 8}, "d_recon_coef": 1.0})
    torch.manual_seed(0)
    nets = trainables(cfg, model_config(cfg, DATA.emb_dim, DATA.image_size))
    assert isinstance(nets.D.recon_decoder, ReconDecoder)
    data = list(batches(train_urls, cfg.batch_size))
    x = step_inputs(data[0], cfg, torch.Generator().manual_seed(0))
    redrawn = nets.D.recon_decoder.net(nets.D.features(x.real))
    assert redrawn.shape == (len(x.real), 3, DATA.image_size // 2, DATA.image_size // 2)
    nets.D.recon_decoder.loss(nets.D.features(x.real), x.real).backward()
    first = next(m for m in nets.D.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    nets.D.zero_grad(set_to_none=True)

    rng = torch.Generator().manual_seed(0)
    losses = [gan_step(nets, step_inputs(data[s % len(data)], cfg, rng), cfg)["d_recon"].item() for s in range(60)]
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5, losses

    training_loop(train_urls, tmp_path, cfg.model_copy(update={"epochs": 1}), data=DATA, progress=False)
    D = load_discriminator(tmp_path / CHECKPOINT)
    assert isinstance(D.recon_decoder, ReconDecoder)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)["D"]
    assert any(k.startswith("recon_decoder.") for k in saved)
    assert all(torch.equal(v, saved[k]) for k, v in D.state_dict().items())
