"""CUB-200-2011 and Oxford-102 with Reed et al.'s captions, from miniature archives laid out like
the real ones: raw layout, splits, attributes, bounding-box crop, faults, and `t2i download`."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from tests import realdata
from t2i import T2IError
from t2i.data.raw import read_raw
from t2i.data.shards import square
from t2i.data.sources import cub, oxford, prepare_raw
from t2i.params import load_params


def md5_map(md5s: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in md5s.items()) + "}"


def params(tmp_path: Path, dataset: str, md5s: dict[str, str], *extra: str):
    return load_params(None, [f"dataset={dataset}", f"download.mirror={tmp_path / 'mirror'}",
                                                f"download.root={tmp_path / 'downloads'}", f"download.md5={md5_map(md5s)}",
                                                "download.backoff=0", *extra])


def rows(raw: Path) -> list[dict]:
    return [json.loads(line) for line in (raw / "samples.jsonl").read_text().splitlines()]


@pytest.fixture
def cub_mirror(tmp_path) -> dict[str, str]:
    return realdata.cub_files(tmp_path / "mirror")


@pytest.fixture
def oxford_mirror(tmp_path) -> dict[str, str]:
    return realdata.oxford_files(tmp_path / "mirror")


# --------------------------------------------------------------------------- CUB


def test_cub_raw_layout(tmp_path, cub_mirror):
    info = prepare_raw(tmp_path / "raw", params(tmp_path, "cub", cub_mirror), progress=False)
    per_class = 4
    n_test = per_class * len(realdata.CUB_TEST)
    assert info["counts"] == {"train": 24 - n_test, "test": n_test}
    assert info["classes"] == {"train": 4, "test": 2}
    assert set(info["sources"]) == {"CUB_200_2011.tgz", "cvpr2016_cub.tar.gz"}
    assert info["sources"]["cvpr2016_cub.tar.gz"]["sha256"] == realdata.sha256(tmp_path / "mirror/cvpr2016_cub.tar.gz")
    assert not info["official_counts_checked"]  # the miniature is not the official archive

    samples = rows(tmp_path / "raw")
    first = samples[0]
    assert first["key"] == "cub_00001" and first["image"] == "cub_00001.jpg" and len(first["captions"]) == 10
    meta = first["meta"]
    assert meta["class_name"] == "001.Black_footed_Albatross" and meta["class_id"] == 0
    assert meta["bbox"] == [6.0, 8.0, 24.0, 18.0]
    assert meta["attributes"] == {"bill_shape": "curved_(up_or_down)", "wing_color": "red", "primary_color": "red",
                                  "size": "small_(5_-_9_in)"}
    assert sorted(a for a, _ in meta["cub_attributes"]) == [1, 11, 21, 30]
    test_classes = {s["meta"]["class_id"] + 1 for s in samples if s["split"] == "test"}
    assert test_classes == realdata.CUB_TEST  # class-disjoint, from testclasses.txt

    # Original JPEG bytes, not re-encoded; nothing but the raw layout is left behind.
    with tarfile.open(tmp_path / "mirror/CUB_200_2011.tgz") as tar:
        original = tar.extractfile(f"CUB_200_2011/images/{meta['file']}").read()
    assert (tmp_path / "raw/images/cub_00001.jpg").read_bytes() == original
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["images", "info.json", "samples.jsonl"]
    assert len(list(read_raw(tmp_path / "raw"))) == 24


def test_cub_rerun_is_identical_and_offline(tmp_path, cub_mirror, tree_hashes):
    p = params(tmp_path, "cub", cub_mirror)
    prepare_raw(tmp_path / "a", p, progress=False)
    shutil.rmtree(tmp_path / "mirror")  # verified files under download.root are enough now
    prepare_raw(tmp_path / "b", p, progress=False)
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")


def test_official_counts_are_asserted(tmp_path, cub_mirror, monkeypatch):
    """With the official archive's md5 the 8855 / 2933 split is checked (here it cannot hold)."""
    official = cub.IMAGES.__class__(cub.IMAGES.name, cub.IMAGES.urls, cub_mirror["CUB_200_2011.tgz"])
    monkeypatch.setattr(cub, "IMAGES", official)
    with pytest.raises(T2IError, match=r"should give 8855 train \+ 2933 test images, got 16 \+ 8"):
        prepare_raw(tmp_path / "raw", params(tmp_path, "cub", {}), progress=False)
    assert not (tmp_path / "raw").exists()


def test_images_without_captions_are_reported(tmp_path):
    stem = "Laysan_Albatross_0002_790006"
    md5s = realdata.cub_files(tmp_path / "mirror", skip_captions=(stem,), short_captions=("Sooty_Albatross_0001_790009",))
    with pytest.raises(T2IError) as e:
        prepare_raw(tmp_path / "raw", params(tmp_path, "cub", md5s), progress=False)
    msg = str(e.value)
    assert "2 of 24 images lack captions" in msg and stem in msg and "Sooty_Albatross_0001_790009" in msg
    assert "download.max_missing" in msg and "\n" not in msg
    assert not (tmp_path / "raw").exists()

    info = prepare_raw(tmp_path / "raw", params(tmp_path, "cub", md5s, "download.max_missing=0.1"), progress=False)
    assert info["captions"]["images_without_captions"] == 1 and info["captions"]["images_with_too_few_captions"] == 1
    assert sum(info["counts"].values()) == 22


def test_caption_archive_without_split_files(tmp_path):
    md5s = realdata.cub_files(tmp_path / "mirror", split_files=False)
    with pytest.raises(T2IError, match="cvpr2016_cub.tar.gz: no class split files found"):
        prepare_raw(tmp_path / "raw", params(tmp_path, "cub", md5s), progress=False)
    assert not (tmp_path / "raw").exists()


def test_truncated_caption_archive(tmp_path, cub_mirror):
    path = tmp_path / "mirror/cvpr2016_cub.tar.gz"
    path.write_bytes(path.read_bytes()[:-200])  # no pinned md5: the unpacking finds it
    with pytest.raises(T2IError, match="corrupt or truncated archive .*cvpr2016_cub.tar.gz"):
        prepare_raw(tmp_path / "raw", params(tmp_path, "cub", {"CUB_200_2011.tgz": cub_mirror["CUB_200_2011.tgz"]}),
                progress=False)
    assert not (tmp_path / "raw").exists()


def test_wrong_checksum_is_never_unpacked(tmp_path, cub_mirror):
    bad = dict(cub_mirror, **{"CUB_200_2011.tgz": "0" * 32})
    with pytest.raises(T2IError) as e:
        prepare_raw(tmp_path / "raw", params(tmp_path, "cub", bad), progress=False)
    assert "CUB_200_2011.tgz" in str(e.value) and "0" * 32 in str(e.value) and cub_mirror["CUB_200_2011.tgz"] in str(e.value)
    assert not (tmp_path / "downloads/CUB_200_2011.tgz").exists()
    assert not (tmp_path / "raw").exists()


def test_escaping_member_in_image_archive(tmp_path):
    tgz, caps = realdata.cub_members()
    tgz["CUB_200_2011/images/../../../evil.txt"] = b"owned"
    (tmp_path / "mirror").mkdir()
    realdata.write_tar(tmp_path / "mirror/CUB_200_2011.tgz", tgz)
    realdata.write_tar(tmp_path / "mirror/cvpr2016_cub.tar.gz", caps)
    md5s = {n: realdata.md5(tmp_path / "mirror" / n) for n in ("CUB_200_2011.tgz", "cvpr2016_cub.tar.gz")}
    with pytest.raises(T2IError, match=r"unsafe member .*evil\.txt"):
        prepare_raw(tmp_path / "raw", params(tmp_path, "cub", md5s), progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "raw").exists()


def test_symlink_member_in_caption_archive(tmp_path, cub_mirror):
    tgz, caps = realdata.cub_members()
    realdata.write_tar(tmp_path / "mirror/cvpr2016_cub.tar.gz", caps, links={"cvpr2016_cub/text_c10/passwd.txt": "/etc/passwd"})
    with pytest.raises(T2IError, match=r"unsafe member .*passwd\.txt"):
        prepare_raw(tmp_path / "raw", params(tmp_path, "cub", {"CUB_200_2011.tgz": cub_mirror["CUB_200_2011.tgz"]}),
                progress=False)
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- Oxford-102


def test_oxford_raw_layout(tmp_path, oxford_mirror):
    info = prepare_raw(tmp_path / "raw", params(tmp_path, "oxford-102", oxford_mirror), progress=False)
    assert info["counts"] == {"train": 12, "test": 8} and info["classes"] == {"train": 3, "test": 2}
    assert set(info["sources"]) == {"102flowers.tgz", "imagelabels.mat", "setid.mat", "cvpr2016_flowers.tar.gz"}
    samples = rows(tmp_path / "raw")
    assert [s["key"] for s in samples[:2]] == ["oxford_00001", "oxford_00002"]
    assert samples[1]["meta"] == {"image_id": 2, "class_id": 1, "class_name": "class_00002", "file": "jpg/image_00002.jpg",
                                  "vgg_set": "val"}
    # The split comes from trainvalids.txt + allclasses.txt (Reed's scripts), class-disjoint.
    assert {s["meta"]["class_id"] + 1 for s in samples if s["split"] == "test"} == realdata.FLOWER_TEST
    with tarfile.open(tmp_path / "mirror/102flowers.tgz") as tar:
        assert (tmp_path / "raw/images/oxford_00002.jpg").read_bytes() == tar.extractfile("jpg/image_00002.jpg").read()


def test_corrupt_mat_file(tmp_path, oxford_mirror):
    (tmp_path / "mirror/imagelabels.mat").write_bytes(b"MATLAB 5.0 MAT-file, but not really")
    md5s = dict(oxford_mirror, **{"imagelabels.mat": realdata.md5(tmp_path / "mirror/imagelabels.mat")})
    with pytest.raises(T2IError, match="cannot read imagelabels.mat"):
        prepare_raw(tmp_path / "raw", params(tmp_path, "oxford-102", md5s), progress=False)
    assert not (tmp_path / "raw").exists()


def test_oxford_from_pinned_official_urls_only_when_md5_matches(tmp_path, oxford_mirror):
    """Without an md5 override the miniature files fail the official pins: one line each, nothing unpacked."""
    with pytest.raises(T2IError) as e:
        prepare_raw(tmp_path / "raw", params(tmp_path, "oxford-102", {}), progress=False)
    line = str(e.value)
    assert "\n" not in line and oxford.IMAGES.md5 in line and oxford_mirror["102flowers.tgz"] in line


# --------------------------------------------------------------------------- crop


def test_bbox_crop_is_stackgan_style():
    image = Image.new("RGB", (100, 60), (0, 0, 255))
    image.paste((255, 0, 0), (40, 20, 60, 40))  # the 20x20 "bird"
    out = square(image, 30, bbox=[40, 20, 20, 20])  # 30x30 square around it, inside the image
    assert out.size == (30, 30)
    assert out.getpixel((15, 15)) == (255, 0, 0) and out.getpixel((1, 1)) == (0, 0, 255)
    red = sum(1 for x in range(30) for y in range(30) if out.getpixel((x, y))[0] > 200)
    assert abs(red - 400) < 40  # the box covers 2/3 of the side: (20 / 30 * 30)^2 = 400 pixels
    edge = square(image, 30, bbox=[0, 0, 20, 20])  # clipped at the border, then resized
    assert edge.size == (30, 30)
    whole = square(image, 30)  # no box: centre square of the whole picture
    assert whole.getpixel((15, 15)) == (255, 0, 0)


# --------------------------------------------------------------------------- the CLI and the pipeline


def test_t2i_download_over_http_resumes_and_reports(tmp_path, cub_mirror):
    """`t2i download -S dataset=cub`: the download alone, from a mirror whose first transfer of
    each file is cut half-way (resumed with Range), then a rerun that fetches nothing."""
    from tests.httpserver import serve
    from tests.test_cli_errors import t2i

    size = (tmp_path / "mirror/CUB_200_2011.tgz").stat().st_size
    args = ("download", "-S", "dataset=cub", "-S", f"download.md5={md5_map(cub_mirror)}", "-S", "download.backoff=0",
            "--data", "data")
    with serve(tmp_path / "mirror", drop_after=size // 2) as server:
        proc = t2i(tmp_path, *args, "-S", f"download.mirror={server.url}")
        assert proc.returncode == 0, proc.stderr
        assert f"bytes={size // 2}-" in [r.range for r in server.requests if r.path == "/CUB_200_2011.tgz"]
        assert "download: 16 train + 8 test images -> data/raw/cub" in proc.stdout
        assert "cvpr2016_cub.tar.gz" in proc.stdout and realdata.sha256(tmp_path / "mirror/cvpr2016_cub.tar.gz") in proc.stdout
        n = len(server.requests)
        again = t2i(tmp_path, *args, "-S", f"download.mirror={server.url}")
        assert again.returncode == 0, again.stderr
        assert len(server.requests) == n  # verified files are kept in download.root: nothing fetched
    assert (tmp_path / "data/downloads/CUB_200_2011.tgz").read_bytes() == (tmp_path / "mirror/CUB_200_2011.tgz").read_bytes()
    assert sorted(p.name for p in (tmp_path / "data/downloads").iterdir()) == ["CUB_200_2011.tgz", "cvpr2016_cub.tar.gz"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset, ranges", [("cub", True), ("oxford-102", False)])
def test_whole_pipeline_on_a_real_dataset_layout(dataset, ranges, tmp_path):
    """download -> shard -> embed -> train -> evaluator -> evaluate, the source files served over
    HTTP by a mirror (with and without Range support): `dvc repro` with dataset: cub in
    params.yaml, and `dvc exp run -S dataset=oxford-102 ...` as the README shows it."""
    from tests.httpserver import serve
    from tests.project import dvc, make_project

    md5s = (realdata.cub_files if dataset == "cub" else realdata.oxford_files)(tmp_path / "mirror")
    with serve(tmp_path / "mirror", ranges=ranges) as server:
        if dataset == "cub":
            project = make_project(tmp_path / "project", params={
                "dataset": dataset, "download": {"mirror": server.url, "md5": md5s, "backoff": 0}})
            log = dvc(project, "repro")
        else:
            project = make_project(tmp_path / "project", git=True)
            pins = ",".join(f"{name}:{md5}" for name, md5 in md5s.items())
            log = dvc(project, "exp", "run", "-S", f"dataset={dataset}", "-S", f"download.mirror={server.url}",
                      "-S", f"++download.md5={{{pins}}}", "-S", "download.backoff=0")
    for stage in ("download", "shard", "embed", "ground", "train", "evaluator", "evaluate"):
        assert f"Running stage '{stage}'" in log
    manifest = json.loads((project / f"data/shards/{dataset}/manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["test"]["count"] == (24 if dataset == "cub" else 20)
    metrics = json.loads((project / f"data/eval/{dataset}/metrics.json").read_text())
    assert 0 <= metrics["r_precision/fake"] <= 1 and metrics["fd_evaluator"] >= 0
    if dataset == "cub":  # attributes shared across classes: scored on unseen test classes
        assert {"attr/primary_color/fake", "attr/primary_color/real", "attr/primary_color/chance"} <= set(metrics)
    else:  # only class labels, and the split is class-disjoint: said, not scored
        assert "class-disjoint" in metrics["skipped"]["attribute_accuracy"]
    assert "Running stage" not in dvc(project, "repro")


def test_unlabelled_folder_through_evaluator_and_evaluate(tmp_path):
    """A `folder` dataset without class labels: seeded split by image, an evaluator with only its
    text projection, and evaluate says why attribute accuracy is skipped."""
    import torch

    from tests.conftest import bow_encode
    from t2i.data.embed import embed_shards
    from t2i.data.loader import embedded_urls
    from t2i.data.shards import write_shards
    from t2i.evaluate import evaluate
    from t2i.evaluator import load_evaluator, train_evaluator
    from t2i.families.gan_cls import Generator, ModelConfig
    from t2i.params import EvaluateParams, EvaluatorParams

    src = tmp_path / "pictures"
    src.mkdir()
    for i in range(24):
        colour = list(realdata.COLOURS)[i % 6]
        (src / f"{i:02d}.jpg").write_bytes(realdata.picture(colour, (40, 40), (8, 8, 20, 20)))
        (src / f"{i:02d}.txt").write_text(f"a {colour} shape\na round {colour} thing\n")
    p = load_params(None, ["dataset=folder", f"folder.path={src}", "download.test_fraction=0.25"])
    info = prepare_raw(tmp_path / "raw", p, progress=False)
    assert info["counts"] == {"train": 18, "test": 6} and info["classes"] is None
    write_shards(read_raw(tmp_path / "raw"), tmp_path / "shards", dataset="folder", image_size=32, samples_per_shard=8)
    embed_shards(tmp_path / "shards", tmp_path / "emb", lambda t: bow_encode(t, 16), model="bow", dim=16)

    summary = train_evaluator(embedded_urls(tmp_path / "emb", "train"), tmp_path / "evaluator.pt",
                              EvaluatorParams(epochs=1, batch_size=6, feat_dim=16), progress=False)
    assert summary["attributes"] == {}
    evaluator = load_evaluator(tmp_path / "evaluator.pt")
    torch.manual_seed(0)
    generator = Generator(ModelConfig(emb_dim=16, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32, ca=False))
    result = evaluate(generator, evaluator, embedded_urls(tmp_path / "emb", "test"), tmp_path / "eval",
                      EvaluateParams(metrics=["attribute_accuracy", "r_precision", "frechet_distance"], batch_size=8,
                                     grid_captions=2, grid_noise=2))
    assert result["skipped"] == {"attribute_accuracy": "the dataset has neither attribute nor class labels"}
    assert result["n_images"] == 6 and 0 <= result["r_precision/real"] <= 1 and result["fd_evaluator"] >= 0
