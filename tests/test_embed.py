"""Embedded shards: one float16 vector per caption, each distinct caption encoded once."""

import gc
import json

import numpy as np
import pytest
import torch

from t2i import T2IError, probes
from t2i.data.embed import CaptionCache, embed_shards
from t2i.data.shards import MANIFEST

N = 24


@pytest.fixture
def shards(tmp_path, build_shards):
    folder = tmp_path / "shards"
    manifest = build_shards(folder, n=N)
    return folder, manifest


def run(src, out, encoder, **kw):
    return embed_shards(src, out, encoder, model="fake", dim=encoder.dim, **kw)


def all_samples(folder, manifest, tar_contents):
    out = {}
    for info in manifest["splits"].values():
        for x in info["shards"]:
            out.update(tar_contents(folder / x["name"]))
    return out


# --------------------------------------------------------------------------- content


def test_embedded_shards_add_aligned_float16_vectors(shards, tmp_path, fake_encoder, fake_vec,
                                                     tar_contents, load_npy):
    src, manifest = shards
    out = tmp_path / "emb"
    summary = run(src, out, fake_encoder)
    before = all_samples(src, manifest, tar_contents)
    after = all_samples(out, manifest, tar_contents)
    assert list(after) == list(before) and len(after) == N
    for key, parts in after.items():
        assert set(parts) == {"png", "txt", "json", "emb.npy"}
        for ext in ("png", "txt", "json"):  # the original bytes, untouched
            assert parts[ext] == before[key][ext]
        emb = load_npy(parts["emb.npy"])
        assert emb.dtype == np.float16 and emb.shape == (10, fake_encoder.dim)
        captions = parts["txt"].decode().rstrip("\n").split("\n")
        for caption, row in zip(captions, emb):  # row i is the vector of caption i
            assert np.array_equal(row, fake_vec(caption).astype(np.float16))
    assert summary["emb_dim"] == fake_encoder.dim and summary["emb_dtype"] == "float16"
    assert summary["text_model"] == "fake"
    assert summary["splits"] == manifest["splits"]
    assert json.loads((out / MANIFEST).read_text()) == summary
    assert sorted(p.name for p in out.iterdir()) == sorted([*(p.name for p in src.iterdir()), probes.FILE])
    assert summary["probes"] == probes.FILE  # synthetic captions say which attributes they name


def test_probes_carry_the_cached_vectors_of_their_captions(shards, tmp_path, fake_encoder, fake_vec):
    src, _ = shards
    run(src, tmp_path / "emb", fake_encoder)
    found = probes.load_probes(tmp_path / "emb")
    rows = found["d_check"]["centre_colour"]
    assert len(rows["index"]) == len(found["keys"]) > 0  # every test image has a caption naming its centre
    for text, vec in zip(rows["true"] + rows["altered"], torch.cat([rows["true_emb"], rows["altered_emb"]])):
        assert np.array_equal(vec.numpy(), fake_vec(text).astype(np.float16))
    assert all(t != a for t, a in zip(rows["true"], rows["altered"]))


def test_no_probes_for_captions_of_unknown_content(tmp_path, fake_encoder):
    from t2i.data import synth
    from t2i.data.shards import write_shards

    samples = list(synth.flowers(12, 32, 0, 0.3))
    for s in samples:
        s.meta.pop("named", None)  # free text: which attributes a caption names is unknown
    write_shards(iter(samples), tmp_path / "shards", dataset="x", image_size=16, samples_per_shard=8)
    summary = run(tmp_path / "shards", tmp_path / "emb", fake_encoder)
    assert "probes" not in summary and probes.load_probes(tmp_path / "emb") is None


def test_same_caption_same_vector(shards, tmp_path, fake_encoder, tar_contents, load_npy):
    src, manifest = shards
    out = tmp_path / "emb"
    run(src, out, fake_encoder)
    by_caption: dict[str, bytes] = {}
    repeats = 0
    for parts in all_samples(out, manifest, tar_contents).values():
        captions = parts["txt"].decode().rstrip("\n").split("\n")
        for caption, row in zip(captions, load_npy(parts["emb.npy"])):
            if caption in by_caption:
                repeats += 1
                assert by_caption[caption] == row.tobytes(), caption
            by_caption[caption] = row.tobytes()
    assert repeats > 0  # the synthetic captions do repeat, so this checked something


def test_identical_captions_encoded_once(shards, tmp_path, fake_encoder, tar_contents):
    src, manifest = shards
    summary = run(src, tmp_path / "emb", fake_encoder)
    captions = [c for parts in all_samples(src, manifest, tar_contents).values()
                for c in parts["txt"].decode().rstrip("\n").split("\n")]
    sent = fake_encoder.texts
    assert len(sent) == len(set(sent)) and len(set(captions)) < len(captions)
    assert set(captions) <= set(sent)  # and the probes' own captions
    assert summary["unique_captions_encoded"] == len(set(sent))
    for call in fake_encoder.calls:
        assert call == sorted(call)  # sorted batches: deterministic on CPU


@pytest.mark.parametrize("cache_size", [0, 1, 7])
def test_small_cache_still_correct(shards, tmp_path, fake_encoder, tree_hashes, cache_size):
    src, _ = shards
    reference = tmp_path / "ref"
    run(src, reference, type(fake_encoder)())
    out = tmp_path / "small"
    summary = run(src, out, fake_encoder, cache_size=cache_size)
    ref, got = tree_hashes(reference), tree_hashes(out)
    del ref[MANIFEST], got[MANIFEST]  # unique_captions_encoded may differ
    assert got == ref
    assert summary["unique_captions_encoded"] == len(fake_encoder.texts)


def test_caption_cache_unit(fake_encoder, fake_vec):
    cache = CaptionCache(fake_encoder, size=2)
    out = cache.lookup(["b", "a", "b", "c"])
    assert out.dtype == np.float16 and out.shape == (4, fake_encoder.dim)
    for text, row in zip(["b", "a", "b", "c"], out):
        assert np.array_equal(row, fake_vec(text).astype(np.float16))
    assert fake_encoder.calls == [["a", "b", "c"]]
    assert cache.encoded == 3 and len(cache.table) == 2
    assert list(cache.table) == ["b", "c"]  # oldest dropped first
    again = cache.lookup(["c", "a"])
    assert fake_encoder.calls[-1] == ["a"]  # "c" was cached, "a" had been evicted
    assert np.array_equal(again, out[[3, 1]])
    assert cache.encoded == 4 and len(cache.table) == 2


def test_rerun_is_byte_identical(shards, tmp_path, fake_encoder, tree_hashes):
    src, _ = shards
    run(src, tmp_path / "a", fake_encoder)
    run(src, tmp_path / "b", type(fake_encoder)())
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")


def test_rerun_replaces_output(shards, tmp_path, fake_encoder, tree_hashes, leftovers):
    src, _ = shards
    out = tmp_path / "emb"
    out.mkdir()
    (out / "stale.tar").write_bytes(b"old")
    run(src, out, fake_encoder)
    assert not (out / "stale.tar").exists()
    assert leftovers(tmp_path) == []


def test_progress_counts_samples(shards, tmp_path, fake_encoder):
    src, _ = shards
    seen = []
    run(src, tmp_path / "emb", fake_encoder, progress=seen.append)
    assert sum(seen) == N and all(n > 0 for n in seen)


# --------------------------------------------------------------------------- bad input


def assert_nothing_written(tmp_path, leftovers):
    gc.collect()
    assert not (tmp_path / "emb").exists()
    assert leftovers(tmp_path) == []


def test_missing_manifest(tmp_path, fake_encoder, leftovers):
    (tmp_path / "shards").mkdir()
    with pytest.raises(T2IError, match="manifest.json"):
        run(tmp_path / "shards", tmp_path / "emb", fake_encoder)
    assert_nothing_written(tmp_path, leftovers)


def test_missing_shard_file(shards, tmp_path, fake_encoder, leftovers):
    src, _ = shards
    (src / "train-000002.tar").unlink()
    with pytest.raises(T2IError, match=r"missing shard .*train-000002\.tar"):
        run(src, tmp_path / "emb", fake_encoder)
    assert fake_encoder.calls == []  # checked before any work
    assert_nothing_written(tmp_path, leftovers)


@pytest.mark.parametrize("name", ["train-000000.tar", "train-000003.tar", "test-000000.tar"])
def test_truncated_tar(shards, tmp_path, fake_encoder, damage, leftovers, name):
    src, _ = shards
    damage.truncate_half(src / name)
    with pytest.raises(T2IError, match=rf"corrupt or truncated shard .*{name}") as err:
        run(src, tmp_path / "emb", fake_encoder)
    assert "\n" not in str(err.value)
    assert_nothing_written(tmp_path, leftovers)


def test_tar_short_by_whole_samples(shards, tmp_path, fake_encoder, damage, leftovers):
    src, manifest = shards
    name = manifest["splits"]["train"]["shards"][1]["name"]
    left = damage.drop_last_sample(src / name)
    assert left == 4
    with pytest.raises(T2IError, match=rf"{name}: 4 samples, manifest says 5"):
        run(src, tmp_path / "emb", fake_encoder)
    assert_nothing_written(tmp_path, leftovers)


def test_failure_keeps_previous_output(shards, tmp_path, fake_encoder, damage, tree_hashes, leftovers):
    src, _ = shards
    out = tmp_path / "emb"
    run(src, out, fake_encoder)
    before = tree_hashes(out)
    damage.truncate_half(src / "train-000003.tar")  # the last train shard: others are done by then
    with pytest.raises(T2IError, match="train-000003.tar"):
        run(src, out, fake_encoder)
    gc.collect()
    assert tree_hashes(out) == before
    assert leftovers(tmp_path) == []


def test_empty_caption_line_is_an_error(tmp_path, fake_encoder, leftovers):
    import io
    import tarfile

    from t2i.data.shards import TAR_MTIME
    from t2i.io import dump_json

    src = tmp_path / "shards"
    src.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [("k1.txt", b"one\n\nthree\n"), ("k1.json", b"{}")]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), TAR_MTIME
            tar.addfile(info, io.BytesIO(data))
    (src / "train-000000.tar").write_bytes(buf.getvalue())
    (src / MANIFEST).write_bytes(dump_json(
        {"dataset": "x", "splits": {"train": {"count": 1, "shards": [{"name": "train-000000.tar", "count": 1}]}}}))
    with pytest.raises(T2IError, match=r"train-000000\.tar: sample k1: caption 1 is empty"):
        run(src, tmp_path / "emb", fake_encoder)
    assert_nothing_written(tmp_path, leftovers)


# --------------------------------------------------------------------------- the real model


PARAPHRASES = ("this flower has five red petals and a yellow center",
               "a flower with 5 red petals and a yellow centre")
UNRELATED = "the quarterly tax report is due next monday"


def test_real_encoder_deterministic_and_semantic(text_encoder):
    texts = [*PARAPHRASES, UNRELATED]
    a = text_encoder.encode(texts)
    b = text_encoder.encode(list(texts))
    assert a.dtype == np.float32 and a.shape == (3, text_encoder.dim) and text_encoder.dim == 384
    assert np.array_equal(a, b)
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    sim = unit @ unit.T
    assert sim[0, 1] > 0.8
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3
    with pytest.raises(T2IError, match="text encoder: caption 1 is empty"):
        text_encoder.encode(["fine", " "])


def test_real_encoder_embed_shards(tmp_path, build_shards, text_encoder, tar_contents, load_npy, tree_hashes):
    src = tmp_path / "shards"
    manifest = build_shards(src, n=3, samples_per_shard=2)
    kw = dict(model=text_encoder.name, dim=text_encoder.dim)
    summary = embed_shards(src, tmp_path / "a", text_encoder.encode, **kw)
    embed_shards(src, tmp_path / "b", text_encoder.encode, **kw)
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")
    assert summary["emb_dim"] == 384 and summary["text_model"] == "all-MiniLM-L6-v2"
    captions, stored = [], []
    for parts in all_samples(tmp_path / "a", manifest, tar_contents).values():
        emb = load_npy(parts["emb.npy"])
        assert emb.dtype == np.float16 and emb.shape == (10, 384)
        captions += parts["txt"].decode().rstrip("\n").split("\n")
        stored.append(emb)
    direct = text_encoder.encode(captions)  # one batch, unsorted: equal up to float16 rounding
    assert np.allclose(np.concatenate(stored).astype(np.float32), direct, atol=2e-3)
