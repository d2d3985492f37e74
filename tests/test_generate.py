"""``t2i generate``: a grid from captions, repeatable by seed; clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2i import T2IError
from t2i.generate import generate
from t2i.families.gan_cls import Generator, ModelConfig
from t2i.checkpoint import save_generator


def tiny_generator(path: Path, emb_dim: int) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=emb_dim, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32, ca=False)
    save_generator(path, Generator(cfg), {"model": vars(cfg), "text_model": "all-MiniLM-L6-v2"})
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", "from stages.cli import main; main()", "generate", *args],
                          cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_generate_grid_repeatable_by_seed(tmp_path):
    ckpt = tiny_generator(tmp_path / "g.pt", 384)
    r = cli("this flower has five pink petals and a yellow center", "a red flower", "-n", "3",
            "--checkpoint", str(ckpt), "--out", "grid.png", "--each", "single", "--seed", "7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    grid = Image.open(tmp_path / "grid.png")
    assert grid.height >= 2 * 32 and len(list((tmp_path / "single").glob("*.png"))) == 6
    a = generate(ckpt, ["a red flower"], n=2, seed=7)
    b = generate(ckpt, ["a red flower"], n=2, seed=7)
    c = generate(ckpt, ["a red flower"], n=2, seed=8)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("caption", ["", "   "])
def test_empty_caption_is_an_error(tmp_path, caption):
    r = cli(caption, "--checkpoint", str(tiny_generator(tmp_path / "g.pt", 384)), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: t2i generate: caption 0 is empty")
    assert not (tmp_path / "grid.png").exists()


def test_missing_checkpoint_is_an_error(tmp_path):
    r = cli("a red flower", "--checkpoint", "nowhere/generator.pt", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["error: missing generator checkpoint nowhere/generator.pt: run the train stage first"]


@pytest.mark.slow
def test_the_generator_is_that_of_params_dataset_or_of_an_override(tmp_path):
    """Without --checkpoint, generate uses params.yaml's dataset (like the stages), -S overrides it."""
    (tmp_path / "params.yaml").write_text("dataset: cub\n")
    r = cli("a red bird", cwd=tmp_path)
    assert r.stderr.strip().splitlines()[-1] == \
        "error: missing generator checkpoint data/models/cub/generator.pt: run the train stage first"
    r = cli("a red bird", "-S", "dataset=oxford-102", cwd=tmp_path)
    assert "data/models/oxford-102/generator.pt" in r.stderr
    (tmp_path / "data" / "models" / "cub").mkdir(parents=True)
    tiny_generator(tmp_path / "data" / "models" / "cub" / "generator.pt", 384)
    r = cli("a red bird", "-n", "2", "--out", "cub.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "cub.png").height >= 32


def test_embedding_size_mismatch_is_an_error(tmp_path):
    ckpt = tiny_generator(tmp_path / "g.pt", 16)  # trained on 16-d embeddings, the text model gives 384
    with pytest.raises(T2IError, match=r"gives 384-d embeddings but .*g.pt was trained on 16-d"):
        generate(ckpt, ["a red flower"])


def last_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("out, fmt", [("grid.png", "PNG"), ("grid.jpg", "JPEG"), ("grid.JPEG", "JPEG"), ("grid.webp", "WEBP")])
def test_the_extension_decides_the_format(tmp_path, out, fmt):
    r = cli("a red flower", "-n", "2", "--checkpoint", str(tiny_generator(tmp_path / "g.pt", 384)), "--out", out,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / out).format == fmt


def test_bad_out_paths_fail_before_any_work(tmp_path):
    (tmp_path / "folder").mkdir()
    missing = "nowhere/generator.pt"  # would fail later: these checks come first
    assert last_line(cli("a red flower", "--checkpoint", missing, "--out", "grid.gif", cwd=tmp_path)) == \
        "error: grid.gif: unknown image type (use .png, .jpg, .jpeg, .webp)"
    assert last_line(cli("a red flower", "--checkpoint", missing, "--out", "folder", cwd=tmp_path)) == \
        "error: --out folder is a folder: name an image file, e.g. folder/grid.png"
    assert list(tmp_path.iterdir()) == [tmp_path / "folder"]


@pytest.mark.slow
def test_devices_resolve_in_one_place(tmp_path):
    ckpt = str(tiny_generator(tmp_path / "g.pt", 384))
    r = cli("a red flower", "-n", "1", "--checkpoint", ckpt, "--device", "auto", cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # auto = cpu here
    assert last_line(cli("a red flower", "--checkpoint", ckpt, "--device", "gpu", cwd=tmp_path)) == \
        "error: unknown device 'gpu' (use cpu, cuda, cuda:N or auto)"
    if not torch.cuda.is_available():
        assert last_line(cli("a red flower", "--checkpoint", ckpt, "--device", "cuda", cwd=tmp_path)) == \
            "error: device 'cuda' requested but no CUDA GPU is available"


@pytest.mark.slow
def test_many_images_wrap_into_rows(tmp_path):
    r = cli("a red flower", "-n", "40", "--checkpoint", str(tiny_generator(tmp_path / "g.pt", 384)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width < 16 * 36 + 300 and grid.height >= 3 * 32  # 16 columns, 3 rows


def test_random_bytes_are_not_a_generator_and_no_unsafe_hint(tmp_path):
    from t2i.checkpoint import load_generator

    good = tiny_generator(tmp_path / "good.pt", 384).read_bytes()
    rng = np.random.default_rng(0)
    bad = [rng.bytes(4096) for _ in range(20)] + [good[: len(good) // 2], b"PK\x03\x04" + rng.bytes(100), b""]
    for i, data in enumerate(bad):  # random bytes fail inside torch.load in many different ways
        (tmp_path / f"g{i}.pt").write_bytes(data)
        with pytest.raises(T2IError) as e:
            load_generator(tmp_path / f"g{i}.pt")
        assert str(e.value) == (f"cannot read generator checkpoint {tmp_path / f'g{i}.pt'}: "
                                "not a generator.pt written by t2i train, or a damaged one")
    line = last_line(cli("a red flower", "--checkpoint", "g0.pt", cwd=tmp_path))
    assert line == "error: cannot read generator checkpoint g0.pt: not a generator.pt written by t2i train, or a damaged one"
    assert "weights_only" not in line


def test_help_has_no_rst_markup(tmp_path):
    r = cli("--help", cwd=tmp_path)
    assert r.returncode == 0 and "``" not in r.stdout
