"""WebDataset shards: reproducible bytes, layout, readers, atomic replacement, streaming."""

import gc
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from t2i import T2IError
from t2i.data import synth
from t2i.data.raw import Sample
from t2i.data.shards import MANIFEST, TAR_MTIME, iter_tar, read_manifest, shard_paths, write_shards

N = 24
SPS = 5


def gen(n=N, seed=0):
    return synth.flowers(n, 32, seed, 0.3)


def shard(samples, out, **kw):
    kw = {"dataset": "synthetic-flowers", "image_size": 16, "samples_per_shard": SPS, **kw}
    return write_shards(samples, out, **kw)


def tar_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.tar"))


@pytest.fixture
def shards(tmp_path):
    out = tmp_path / "shards"
    manifest = shard(gen(), out)
    return out, manifest


# --------------------------------------------------------------------------- reproducibility


def test_rerun_is_byte_identical(tmp_path, tree_hashes):
    a, b = tmp_path / "a", tmp_path / "b"
    ma = shard(gen(), a)
    mb = shard(gen(), b)
    assert ma == mb
    ha, hb = tree_hashes(a), tree_hashes(b)
    assert ha == hb
    assert MANIFEST in ha and any(name.endswith(".tar") for name in ha)


def test_different_data_gives_different_bytes(tmp_path, tree_hashes):
    a, b = tmp_path / "a", tmp_path / "b"
    shard(gen(seed=0), a)
    shard(gen(seed=1), b)
    assert tree_hashes(a)["train-000000.tar"] != tree_hashes(b)["train-000000.tar"]


def test_tar_members_have_fixed_metadata(shards):
    out, _ = shards
    for path in out.glob("*.tar"):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            assert members
            for m in members:
                assert m.isfile()
                assert m.mtime == TAR_MTIME
                assert m.uname == "t2i" and m.gname == "t2i"
                assert m.mode == 0o444


# --------------------------------------------------------------------------- layout


def test_manifest_matches_files(shards, tar_contents):
    out, manifest = shards
    assert read_manifest(out) == manifest
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert manifest["dataset"] == "synthetic-flowers"
    assert manifest["image_size"] == 16 and manifest["image_format"] == "png"
    assert manifest["captions_per_sample"] == 10
    samples = list(gen())
    expected = {split: sum(s.split == split for s in samples) for split in ("train", "test")}
    assert set(manifest["splits"]) == {k for k, v in expected.items() if v}
    listed = []
    for split, info in manifest["splits"].items():
        assert info["count"] == expected[split]
        counts = [x["count"] for x in info["shards"]]
        assert sum(counts) == info["count"]
        assert all(c == SPS for c in counts[:-1]) and 1 <= counts[-1] <= SPS
        names = [x["name"] for x in info["shards"]]
        assert names == [f"{split}-{i:06d}.tar" for i in range(len(names))]
        for x in info["shards"]:
            assert len(tar_contents(out / x["name"])) == x["count"]
        listed += names
    assert sorted(listed) == tar_names(out)


def test_samples_have_png_txt_json(shards, tar_contents):
    out, manifest = shards
    by_key = {s.key: s for s in gen()}
    seen = []
    for split, info in manifest["splits"].items():
        for x in info["shards"]:
            with tarfile.open(out / x["name"]) as tar:
                for m in tar.getmembers():
                    assert m.name.count(".") == 1, m.name  # key has no dots
            for key, parts in tar_contents(out / x["name"]).items():
                seen.append(key)
                assert set(parts) == {"png", "txt", "json"}
                src = by_key[key]
                lines = parts["txt"].decode().split("\n")
                assert lines[-1] == "" and lines[:-1] == src.captions
                assert len(lines[:-1]) == 10 and all(lines[:-1])
                meta = json.loads(parts["json"])
                for field in ("image_id", "class_id", "class_name", "attributes", "split"):
                    assert field in meta, field
                assert meta["split"] == split == src.split
                assert meta["image_id"] == src.meta["image_id"]
                assert meta["class_id"] == src.meta["class_id"]
                assert meta["attributes"] == src.meta["attributes"]
                with Image.open(io.BytesIO(parts["png"])) as im:
                    assert im.format == "PNG" and im.mode == "RGB" and im.size == (16, 16)
    assert sorted(seen) == sorted(by_key)


def test_samples_per_shard_one(tmp_path):
    m = shard(gen(7), tmp_path / "s", samples_per_shard=1)
    for info in m["splits"].values():
        assert [x["count"] for x in info["shards"]] == [1] * info["count"]
    assert sum(i["count"] for i in m["splits"].values()) == 7


def test_jpg_format(tmp_path, tar_contents):
    out = tmp_path / "jpg"
    m = shard(gen(8), out, image_format="jpg", jpeg_quality=80, image_size=24)
    assert m["image_format"] == "jpg"
    for path in out.glob("*.tar"):
        for parts in tar_contents(path).values():
            assert set(parts) == {"jpg", "txt", "json"}
            with Image.open(io.BytesIO(parts["jpg"])) as im:
                assert im.format == "JPEG" and im.size == (24, 24)


def test_non_square_images_are_centre_cropped(tmp_path, tar_contents):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (10, 0, 30, 20))  # the centre square is red, the sides blue
    s = Sample("wide", image, ["a wide picture"], "train", {"image_id": 0})
    shard([s], tmp_path / "w", image_size=8)
    parts = tar_contents(tmp_path / "w" / "train-000000.tar")["wide"]
    with Image.open(io.BytesIO(parts["png"])) as im:
        assert im.size == (8, 8)
        r, g, b = im.convert("RGB").getpixel((0, 4))
        assert r > 200 and b < 50


# --------------------------------------------------------------------------- readers


def test_readable_by_webdataset(shards):
    import webdataset as wds

    out, manifest = shards
    urls = [str(p) for p in shard_paths(out, "train", manifest)]
    rows = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(rows) == manifest["splits"]["train"]["count"]
    for row in rows:
        assert isinstance(row["png"], Image.Image) and row["png"].size == (16, 16)
        assert len(row["txt"].rstrip("\n").split("\n")) == 10
        assert row["json"]["split"] == "train"
        assert row["json"]["key"] == row["__key__"]


def test_iter_tar_reads_every_sample(shards):
    out, manifest = shards
    for split in manifest["splits"]:
        for path, x in zip(shard_paths(out, split, manifest), manifest["splits"][split]["shards"]):
            rows = list(iter_tar(path, expected=x["count"]))
            assert len(rows) == x["count"]
            assert all(set(r) == {"__key__", "png", "txt", "json"} for r in rows)


def test_readable_by_hf_datasets(shards, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, manifest = shards
    files = [str(p) for p in shard_paths(out, "train", manifest)]
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == manifest["splits"]["train"]["count"]
    assert "txt" in ds.column_names and "json" in ds.column_names
    row = ds[0]
    assert len(row["txt"].rstrip("\n").split("\n")) == 10
    assert row["json"]["split"] == "train"


# --------------------------------------------------------------------------- atomic replacement


def test_rerun_replaces_folder_instead_of_merging(tmp_path):
    out = tmp_path / "s"
    shard(gen(), out, samples_per_shard=2)
    many = tar_names(out)
    m = shard(gen(), out, samples_per_shard=100)
    assert tar_names(out) == sorted(x["name"] for i in m["splits"].values() for x in i["shards"])
    assert len(tar_names(out)) < len(many)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_failure_midway_keeps_previous_folder(tmp_path, tree_hashes, leftovers):
    out = tmp_path / "s"
    shard(gen(), out)
    before = tree_hashes(out)

    def broken():
        for i, s in enumerate(gen(12, seed=3)):
            if i == 8:
                yield Sample("bad_000008", s.image, ["fine caption", "  "], "train", s.meta)
            yield s

    with pytest.raises(T2IError, match=r"bad_000008.*caption 1 is empty"):
        shard(broken(), out, samples_per_shard=2)  # several shards already written by then
    gc.collect()  # finalize the leaked writers here, not at a random later point
    assert tree_hashes(out) == before
    assert leftovers(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_failure_without_previous_folder_leaves_nothing(tmp_path, leftovers):
    def broken():
        yield from gen(3)
        raise T2IError("source broke")

    with pytest.raises(T2IError, match="source broke"):
        shard(broken(), tmp_path / "s")
    gc.collect()  # finalize the leaked writers here, not at a random later point
    assert list(tmp_path.iterdir()) == []


def test_empty_input_is_an_error(tmp_path):
    with pytest.raises(T2IError, match="no samples"):
        shard(iter(()), tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["has.dot", "", "a/b"])
def test_bad_keys_rejected(tmp_path, key):
    s = Sample(key, Image.new("RGB", (8, 8)), ["x"], "train", {})
    with pytest.raises(T2IError, match="bad sample key"):
        shard([s], tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- streaming


def test_write_shards_streams_a_generator(tmp_path):
    """Samples are pulled one at a time: each is written before the next is requested."""
    pulled = 0
    image = Image.new("RGB", (8, 8), (200, 30, 40))

    def many():
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield Sample(f"s{i:04d}", image, [f"caption {i}", "another"], "train", {"image_id": i})

    at_progress = []
    m = shard(many(), tmp_path / "s", image_size=8, samples_per_shard=50,
              progress=lambda: at_progress.append(pulled))
    assert at_progress == list(range(1, 201))
    assert m["splits"]["train"]["count"] == 200
    assert [x["count"] for x in m["splits"]["train"]["shards"]] == [50] * 4
    assert m["captions_per_sample"] == 2


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_failure_closes_open_shard_files(tmp_path):
    import os

    def broken():
        yield from gen(6)
        raise T2IError("source broke")

    leaked = None
    try:
        shard(broken(), tmp_path / "s", samples_per_shard=2)
    except T2IError:  # while the error propagates, the writer's files should already be closed
        fds = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        leaked = [p for p in fds if p.startswith(str(tmp_path))]
    gc.collect()  # finalize the leaked writers here, not at a random later point
    assert leaked == []


def test_output_folder_has_umask_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    reference = tmp_path / "plain"
    reference.mkdir()
    out = tmp_path / "s"
    shard(gen(3), out)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode) == 0o777 & ~umask
