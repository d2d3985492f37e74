"""The ``t2i`` CLI on bad input: exit 1, one ``error:`` line naming the culprit, no half output."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATASET = "synthetic-flowers"

# A progress-bar redraw (tqdm, or the transformers weight loader): "name: 5%|#  | 1/20 [...]"
# or "name: 0img [00:00, ?img/s]". Only these may appear on stderr besides the error line.
PROGRESS = re.compile(r"^[\w .-]+: +(\d+%\|.*\||\d+\w* \[.*\])")


def t2i(cwd, *args, timeout=120, params=True):
    """Run ``t2i *args`` in ``cwd``; ``params``: give it a params.yaml of defaults if it has none."""
    if params and not (Path(cwd) / "params.yaml").exists():
        (Path(cwd) / "params.yaml").write_text("# the built-in defaults\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", "from stages.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def error_line(proc, strict=True) -> str:
    """The one ``error:`` line of a failed run (``strict``: stderr holds nothing else)."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert lines[-1] == errors[0], proc.stderr
    if strict:
        assert proc.stderr == errors[0] + "\n", proc.stderr
    else:
        noise = [line for line in lines[:-1] if not PROGRESS.match(line)]
        assert noise == [], proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


def test_unknown_dataset(tmp_path, leftovers):
    proc = t2i(tmp_path, "download", "-S", "dataset=oxford-103", "--data", "data")
    line = error_line(proc)
    assert "oxford-103" in line and "dataset" in line
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["download", "shard", "embed", "ground", "train", "evaluator", "evaluate", "bench"])
def test_missing_params_file_is_named(tmp_path, stage):
    line = error_line(t2i(tmp_path, stage, "--data", "data", params=False))
    assert line == "error: params file params.yaml not found"
    line = error_line(t2i(tmp_path, stage, "--params", "paramz.yaml", "--data", "data"))
    assert line == "error: params file paramz.yaml not found"
    assert not (tmp_path / "data").exists()


def test_bool_for_a_number_writes_nothing(tmp_path):
    line = error_line(t2i(tmp_path, "download", "-S", "synth.num_images=true", "--data", "data"))
    assert line == "error: params.yaml: synth.num_images: expected a number, got True"
    assert not (tmp_path / "data").exists()


def test_wrong_param_type(tmp_path):
    proc = t2i(tmp_path, "shard", "-S", "shard.image_size=big", "--data", "data")
    line = error_line(proc)
    assert "shard.image_size" in line and "big" in line
    assert not (tmp_path / "data").exists()


def test_unknown_key_in_params_file(tmp_path):
    (tmp_path / "my.yaml").write_text("synth:\n  num_imgs: 5\n")
    proc = t2i(tmp_path, "download", "--params", "my.yaml", "--data", "data")
    line = error_line(proc)
    assert "synth.num_imgs" in line and "my.yaml" in line
    assert not (tmp_path / "data").exists()


def test_output_under_a_file(tmp_path, leftovers):
    """``--data`` below a regular file cannot be created, even by root."""
    (tmp_path / "blocker").write_text("not a folder")
    proc = t2i(tmp_path, "download", "-S", "synth.num_images=4", "-S", "synth.render_size=32",
               "--data", "blocker/data")
    line = error_line(proc)
    assert "blocker/data" in line
    assert (tmp_path / "blocker").read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "params.yaml"]


def test_unwritable_data_folder(tmp_path, leftovers):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o500)
    try:
        if os.access(data, os.W_OK):
            pytest.skip("running as a user (root) whom chmod does not stop from writing")
        proc = t2i(tmp_path, "download", "-S", "synth.num_images=4", "-S", "synth.render_size=32",
                   "--data", "data")
        line = error_line(proc)
        assert "data" in line
        assert list(data.iterdir()) == []
    finally:
        data.chmod(0o700)


def test_shard_without_raw_data(tmp_path, leftovers):
    proc = t2i(tmp_path, "shard", "--data", "data")
    line = error_line(proc, strict=False)  # the progress bar was already drawn
    assert f"data/raw/{DATASET}/samples.jsonl" in line
    assert not (tmp_path / "data" / "shards" / DATASET).exists()
    assert leftovers(tmp_path) == []


def test_embed_without_shards(tmp_path, leftovers):
    proc = t2i(tmp_path, "embed", "--data", "data")
    line = error_line(proc)  # fails before the model is loaded
    assert f"data/shards/{DATASET}/manifest.json" in line
    assert not (tmp_path / "data" / "embeddings" / DATASET).exists()
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_embed_truncated_shard(tmp_path, build_shards, damage, tree_hashes, leftovers):
    shards = tmp_path / "data" / "shards" / DATASET
    build_shards(shards, n=12, samples_per_shard=4)
    damage.truncate_half(shards / "train-000001.tar")
    before = tree_hashes(shards)
    proc = t2i(tmp_path, "embed", "--data", "data")
    line = error_line(proc, strict=False)  # model-loading and embed progress bars come first
    assert f"data/shards/{DATASET}/train-000001.tar" in line
    assert "truncated" in line
    assert not (tmp_path / "data" / "embeddings" / DATASET).exists()
    assert leftovers(tmp_path / "data") == []
    assert tree_hashes(shards) == before


TINY_TRAIN = ["-S", "train.epochs=1", "-S", "train.batch_size=4", "-S", "train.ngf=8", "-S", "train.ndf=8",
              "-S", "train.threads=1", "-S", "evaluator.epochs=1", "-S", "evaluator.threads=1",
              "-S", "train.text=sentence", "-S", "train.match_coef=0", "-S", "train.d_contrast_coef=0"]  # no grounding


@pytest.fixture
def embedded(tmp_path, make_embedded):
    """data/embeddings/<dataset> of 24 tiny embedded flowers in 4-sample shards."""
    built = make_embedded(tmp_path / "build", 24, samples_per_shard=4)
    target = tmp_path / "data" / "embeddings" / DATASET
    target.parent.mkdir(parents=True)
    built.rename(target)
    return target


@pytest.mark.parametrize("stage, extra", [("train", []), ("evaluator", []), ("train", ["-S", "train.workers=2"])],
                         ids=["train", "evaluator", "train-in-workers"])
def test_truncated_embedded_shard_is_named(tmp_path, embedded, damage, stage, extra):
    """The same line whether the shard is read in the main process or in a DataLoader worker."""
    damage.truncate_half(embedded / "train-000001.tar")
    line = error_line(t2i(tmp_path, stage, "--data", "data", *TINY_TRAIN, *extra), strict=False)
    assert line.startswith(f"error: corrupt or truncated shard data/embeddings/{DATASET}/train-000001.tar: ")


def corrupt_first_image(shard: Path) -> None:
    data = shard.read_bytes()
    i = data.find(b"\x89PNG")
    shard.write_bytes(data[:i + 16] + b"\x00" * 64 + data[i + 80:])


@pytest.mark.parametrize("stage", ["train", "evaluator"])
def test_corrupt_image_in_a_shard_is_named(tmp_path, embedded, stage):
    corrupt_first_image(embedded / "train-000000.tar")
    line = error_line(t2i(tmp_path, stage, "--data", "data", *TINY_TRAIN), strict=False)
    assert re.fullmatch(rf"error: shard data/embeddings/{DATASET}/train-000000.tar: sample \S+: corrupt image \(.+\)",
                        line), line
    assert "BytesIO" not in line


@pytest.mark.slow
def test_embed_checks_images_as_it_copies_them(tmp_path, build_shards, leftovers):
    shards = tmp_path / "data" / "shards" / DATASET
    build_shards(shards, n=12, samples_per_shard=4)
    corrupt_first_image(shards / "train-000001.tar")
    line = error_line(t2i(tmp_path, "embed", "--data", "data"), strict=False)
    assert re.fullmatch(rf"error: shard data/shards/{DATASET}/train-000001.tar: sample \S+: corrupt image \(.+\)", line)
    assert not (tmp_path / "data" / "embeddings" / DATASET).exists()
    assert leftovers(tmp_path / "data") == []


@pytest.mark.slow
def test_unsupported_image_size_keeps_good_outputs(tmp_path, build_shards, tree_hashes):
    shards = tmp_path / "data" / "shards" / DATASET
    build_shards(shards, n=8, samples_per_shard=4)
    before = tree_hashes(tmp_path / "data")
    for stage in ("shard", "embed"):
        line = error_line(t2i(tmp_path, stage, "-S", "shard.image_size=63", "--data", "data"))
        assert line == "error: params.yaml: shard.image_size: image_size must be one of 32, 64, 128 (the models' sizes), got 63"
    assert tree_hashes(tmp_path / "data") == before


def test_evaluate_names_a_truncated_test_shard(embedded, damage):
    from t2i import T2IError
    from t2i.data.loader import embedded_urls
    from t2i.evaluate import read_split

    shard = embedded / "test-000000.tar"
    good = shard.read_bytes()
    left = damage.drop_last_sample(shard)  # a valid tar, one sample short (a cut at a block boundary)
    with pytest.raises(T2IError, match=rf"^corrupt or truncated shard {re.escape(str(shard))}: {left} samples, "
                                       rf"manifest says {left + 1}$"):
        read_split(embedded_urls(embedded, "test"), 4, None)
    shard.write_bytes(good[:good.find(b"\x89PNG") + 100])  # a cut inside a member
    with pytest.raises(T2IError, match=rf"^corrupt or truncated shard {re.escape(str(shard))}: "):
        read_split(embedded_urls(embedded, "test"), 4, None)
