"""evaluate() end to end with a tiny random generator, and the make_grid helper."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from t2i import T2IError
from t2i.params import EvaluateParams, load_params
from t2i.data.loader import batches, embedded_urls
from t2i.evaluate import evaluate
from t2i.grid import LABEL_WIDTH, PAD, make_grid
from t2i.evaluator import Evaluator
from t2i.named import discover_attributes
from t2i.families.gan_cls import Generator, ModelConfig

DIM, S = 16, 32
METRICS = ["attribute_accuracy", "r_precision", "diversity", "frechet_distance", "inception"]


def hashed_encode(texts) -> np.ndarray:
    """A fixed random vector per caption (no model)."""
    def vec(t: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(DIM)
    return np.stack([vec(t) for t in texts]).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_embedded):
    tmp = tmp_path_factory.mktemp("evaluate")
    emb = make_embedded(tmp, 64, image_size=S, dim=DIM, test_fraction=0.3, encode=hashed_encode)
    metas = [m for b in batches(embedded_urls(emb, "train"), 100, drop_last=False) for m in b["meta"]]
    torch.manual_seed(0)
    generator = Generator(ModelConfig(emb_dim=DIM, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=S, ca=False))
    evaluator = Evaluator(discover_attributes(metas), emb_dim=DIM, image_size=S, feat_dim=32).eval()
    return tmp, generator, evaluator, embedded_urls(emb, "test")


def run(setup, out, **kw):
    _, generator, evaluator, urls = setup
    return evaluate(generator, evaluator, urls, out, EvaluateParams(**{"metrics": METRICS, "batch_size": 8, **kw}))


def test_writes_metrics_and_pngs(setup, tmp_path) -> None:
    out = tmp_path / "eval"
    result = run(setup, out, grid_captions=3, grid_noise=4)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == result
    n_test = sum(1 for b in batches(setup[3], 100, drop_last=False) for _ in b["meta"])
    assert result["n_images"] == n_test and result["n_captions_per_image"] == 10
    for key in ("attr/petal_colour/fake", "attr/petal_colour/real", "attr/petal_colour/chance",
                "attr/centre_colour/fake", "attr/petal_count/fake", "r_precision/fake",
                "r_precision/real", "r_precision/chance", "fd_evaluator"):
        assert isinstance(result[key], float), key
    assert "inception" in result["skipped"]  # no weights and offline (or no torch-fidelity)
    assert not any(k.startswith("inception/") for k in result)

    with Image.open(out / "grid.png") as grid:
        assert grid.size == (LABEL_WIDTH + PAD + 4 * (S + PAD) + PAD, 3 * (S + PAD) + PAD)
    with Image.open(out / "interpolation.png") as strip:
        assert strip.width == 8 * (S + PAD) + PAD and strip.height > S + 2 * PAD  # images + caption header
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temp files left


def test_deterministic_for_a_seed(setup, tmp_path) -> None:
    a = run(setup, tmp_path / "a", max_images=12, metrics=["attribute_accuracy", "frechet_distance"])
    b = run(setup, tmp_path / "b", max_images=12, metrics=["attribute_accuracy", "frechet_distance"])
    c = run(setup, tmp_path / "c", max_images=12, metrics=["attribute_accuracy", "frechet_distance"], seed=1)
    assert a == b and a["n_images"] == 12
    for name in ("metrics.json", "grid.png", "interpolation.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "grid.png").read_bytes() != (tmp_path / "c" / "grid.png").read_bytes()
    assert a["fd_evaluator"] != c["fd_evaluator"]


def test_generator_mode_is_restored(setup, tmp_path) -> None:
    generator = setup[1]
    generator.train()
    run(setup, tmp_path / "e", max_images=4, metrics=[])
    assert generator.training
    generator.eval()


def test_unknown_metric_fails_before_any_work(setup, tmp_path) -> None:
    with pytest.raises(T2IError, match="unknown metric 'is_score'"):
        run(setup, tmp_path / "x", metrics=["attribute_accuracy", "is_score"])
    assert not (tmp_path / "x").exists()


def test_bad_arguments(setup, tmp_path) -> None:
    _, _, evaluator, urls = setup
    with pytest.raises(T2IError, match="evaluate.max_images"):  # ranges are checked once, in params.py
        load_params(None, ["evaluate.max_images=1"])
    big = Generator(ModelConfig(emb_dim=DIM, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=64, ca=False))
    with pytest.raises(T2IError, match="generator makes 64x64 images but the test split is 32x32"):
        evaluate(big, evaluator, urls, tmp_path / "x", EvaluateParams(metrics=[]))
    other = Generator(ModelConfig(emb_dim=8, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=S, ca=False))
    with pytest.raises(T2IError, match="emb_dim 8"):
        evaluate(other, evaluator, urls, tmp_path / "x", EvaluateParams(metrics=[]))
    assert not (tmp_path / "x").exists()


def test_make_grid_accepts_uint8_and_float() -> None:
    x = torch.rand(5, 3, 8, 8) * 2 - 1
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    a, b = make_grid(x, nrow=2), make_grid(u8, nrow=2)
    assert a.size == (2 * (8 + PAD) + PAD, 3 * (8 + PAD) + PAD)
    assert a.tobytes() == b.tobytes()
    cell = np.asarray(a)[PAD:PAD + 8, PAD:PAD + 8]  # first image, top-left
    assert (cell == u8[0].permute(1, 2, 0).numpy()).all()
    labelled = make_grid(u8, nrow=2, labels=["one", "two", "a much longer caption " * 5])
    assert labelled.width == a.width + LABEL_WIDTH + PAD
    with pytest.raises(T2IError, match="2 labels for 3 rows"):
        make_grid(u8, nrow=2, labels=["one", "two"])
