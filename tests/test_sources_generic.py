"""Generic adapters: ``folder`` (imagefolder convention) and ``hf`` (a saved ``datasets`` folder)."""

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from t2i import T2IError
from t2i.data.raw import read_raw
from t2i.data.shards import write_shards
from t2i.data.sources import folder as folder_src
from t2i.data.sources import hf as hf_src
from t2i.params import load_params

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def encoded(colour: str, fmt: str = "PNG", size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def params(*overrides: str):
    return load_params(None, list(overrides))


def folder_params(path: Path, *overrides: str):
    return params("dataset=folder", f"folder.path={path}", "download.test_fraction=0.25", *overrides)


def rows(raw: Path) -> list[dict]:
    return [json.loads(line) for line in (raw / "samples.jsonl").read_text().splitlines()]


def write_metadata(root: Path, entries: list[dict]) -> None:
    (root / "metadata.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


@pytest.fixture
def meta_folder(tmp_path) -> Path:
    """16 images in 4 colour classes under two subfolders; string and list captions in metadata.jsonl."""
    root = tmp_path / "images"
    entries = []
    for i in range(16):
        colour = COLOURS[i % 4]
        name = f"{'a' if i < 8 else 'b/c'}/{colour}_{i:02d}.{'jpg' if i % 2 else 'png'}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encoded(colour, "JPEG" if i % 2 else "PNG"))
        text = f"a {colour} square" if i % 3 else [f"a {colour} square", f"{colour} all over"]
        entries.append({"file_name": name, "text": text, "label": colour})
    write_metadata(root, entries)
    return root


@pytest.fixture
def txt_folder(tmp_path) -> Path:
    """20 images, each with a .txt of two captions beside it, no classes."""
    root = tmp_path / "txt"
    root.mkdir()
    for i in range(20):
        colour = COLOURS[i % len(COLOURS)]
        (root / f"img{i:02d}.png").write_bytes(encoded(colour))
        (root / f"img{i:02d}.txt").write_text(f"a {colour}   square\n\n  plain {colour} \n")
    return root


def prepare_folder(tmp_path: Path, p, name: str = "raw") -> tuple[Path, dict]:
    out = tmp_path / name
    return out, folder_src.prepare_folder(out, p, progress=False)


# --------------------------------------------------------------------------- folder


def test_folder_metadata_class_disjoint(tmp_path, meta_folder):
    raw, info = prepare_folder(tmp_path, folder_params(meta_folder, "folder.class_column=label"))
    samples = rows(raw)
    assert [s["key"] for s in samples] == [f"img_{i:06d}" for i in range(16)]
    assert info["counts"]["train"] + info["counts"]["test"] == 16
    assert info["classes"] == {"train": 3, "test": 1}  # round(0.25 * 4) classes held out
    assert info["split"] == "seeded class-disjoint, test_fraction=0.25, seed=0"
    assert info["captions_per_image"] == 1 and info["captions"]["images_without_captions"] == 0
    train = {s["meta"]["class_name"] for s in samples if s["split"] == "train"}
    test = {s["meta"]["class_name"] for s in samples if s["split"] == "test"}
    assert train and test and not train & test
    names = sorted(COLOURS[:4])
    for s in samples:
        meta = s["meta"]
        assert meta["class_id"] == names.index(meta["class_name"])
        assert meta["file"].endswith(".jpg" if s["image"].endswith(".jpg") else ".png")
        assert s["captions"] == [f"a {meta['class_name']} square"]  # the first of a list, N=1
    files = [s["meta"]["file"] for s in samples]
    assert files == sorted(files) and files[0] == "a/blue_02.png" and files[8] == "b/c/blue_10.png"
    json.dumps(info)


def test_folder_list_captions_and_n(tmp_path, meta_folder):
    p = folder_params(meta_folder, "download.captions_per_image=2", "download.max_missing=0.8")
    raw, info = prepare_folder(tmp_path, p)
    samples = rows(raw)
    assert len(samples) == 6  # images 0, 3, 6, 9, 12, 15 have two captions
    assert all(len(s["captions"]) == 2 and int(s["meta"]["file"][-6:-4]) % 3 == 0 for s in samples)
    assert info["captions"]["images_with_too_few_captions"] == 10
    assert info["classes"] is None and all("class_id" not in s["meta"] for s in samples)


def test_folder_txt_split_by_image(tmp_path, txt_folder):
    raw, info = prepare_folder(tmp_path, folder_params(txt_folder))
    samples = rows(raw)
    assert info["counts"] == {"train": 15, "test": 5} and info["classes"] is None
    assert info["split"] == "seeded by image, test_fraction=0.25, seed=0"
    assert samples[3]["captions"] == ["a yellow square"]
    assert samples[3]["meta"] == {"image_id": 3, "file": "img03.png"}
    two = folder_src.prepare_folder(tmp_path / "two", folder_params(txt_folder, "download.captions_per_image=2"), False)
    assert two["captions_per_image"] == 2
    assert rows(tmp_path / "two")[3]["captions"] == ["a yellow square", "plain yellow"]
    other = folder_src.prepare_folder(tmp_path / "seed1", folder_params(txt_folder, "download.seed=1"), False)
    assert other["counts"] == info["counts"]
    assert [s["split"] for s in rows(tmp_path / "seed1")] != [s["split"] for s in samples]


def split_folder(root: Path, sizes: dict[str, int]) -> Path:
    """imagefolder's split layout: <split>/metadata.jsonl beside that split's images."""
    for split, n in sizes.items():
        (root / split).mkdir(parents=True)
        entries = []
        for i in range(n):
            colour = COLOURS[i % len(COLOURS)]
            (root / split / f"{colour}_{i:02d}.png").write_bytes(encoded(colour))
            entries.append({"file_name": f"{colour}_{i:02d}.png", "text": f"a {colour} {split} square"})
        write_metadata(root / split, entries)
    return root


def test_folder_keeps_its_train_and_test_folders(tmp_path):
    root = split_folder(tmp_path / "split", {"train": 9, "test": 3})
    raw, info = prepare_folder(tmp_path, folder_params(root))
    assert info["counts"] == {"train": 9, "test": 3}
    assert info["split"] == "given: the train/ and test/ folders"
    for s in rows(raw):
        assert s["split"] == s["meta"]["file"].split("/")[0] and s["split"] in s["captions"][0]


def test_folder_keeps_a_split_column(tmp_path, txt_folder):
    split = {f"img{i:02d}.png": "test" if i in (0, 1) else "train" for i in range(20)}
    write_metadata(txt_folder, [{"file_name": f, "split": v} for f, v in split.items()])
    raw, info = prepare_folder(tmp_path, folder_params(txt_folder))
    assert info["counts"] == {"train": 18, "test": 2} and info["split"] == "given: the 'split' column of metadata.jsonl"
    assert {s["meta"]["file"]: s["split"] for s in rows(raw)} == split


@pytest.mark.parametrize("value, message", [("dev", "split column 'split' is 'dev', expected 'train' or 'test'"),
                                            ("train", "puts every image in 'train'")])
def test_a_bad_split_column_is_named(tmp_path, txt_folder, value, message):
    write_metadata(txt_folder, [{"file_name": f"img{i:02d}.png", "split": "train" if i else value} for i in range(20)])
    with pytest.raises(T2IError, match=re.escape(message)):
        prepare_folder(tmp_path, folder_params(txt_folder))
    assert not (tmp_path / "raw").exists()


def test_an_image_outside_the_split_folders_is_named(tmp_path):
    root = split_folder(tmp_path / "split", {"train": 4, "test": 2})
    (root / "stray.png").write_bytes(encoded("red"))
    (root / "stray.txt").write_text("a stray red square\n")
    with pytest.raises(T2IError, match="stray.png is in neither"):
        prepare_folder(tmp_path, folder_params(root))


def test_folder_mixed_metadata_and_txt(tmp_path, txt_folder):
    (txt_folder / "img00.txt").unlink()
    write_metadata(txt_folder, [{"file_name": "img00.png", "text": "from metadata"},
                                {"file_name": "./img01.png", "text": "metadata wins"}])
    raw, info = prepare_folder(tmp_path, folder_params(txt_folder))
    samples = rows(raw)
    assert len(samples) == 20
    assert samples[0]["captions"] == ["from metadata"] and samples[1]["captions"] == ["metadata wins"]
    assert samples[2]["captions"] == ["a blue square"]


def test_folder_keeps_original_jpeg_bytes_and_feeds_shards(tmp_path, meta_folder):
    raw, info = prepare_folder(tmp_path, folder_params(meta_folder, "folder.class_column=label"))
    for s in rows(raw):
        assert (raw / "images" / s["image"]).read_bytes() == (meta_folder / s["meta"]["file"]).read_bytes()
    assert sum(s["image"].endswith(".jpg") for s in rows(raw)) == 8
    manifest = write_shards(read_raw(raw), tmp_path / "shards", dataset="folder", image_size=16, samples_per_shard=8)
    assert {k: v["count"] for k, v in manifest["splits"].items()} == info["counts"]
    assert manifest["captions_per_sample"] == 1


def test_folder_is_deterministic(tmp_path, meta_folder, tree_hashes):
    p = folder_params(meta_folder, "folder.class_column=label")
    a, info_a = prepare_folder(tmp_path, p, "a")
    b, info_b = prepare_folder(tmp_path, p, "b")
    assert (a / "samples.jsonl").read_bytes() == (b / "samples.jsonl").read_bytes()
    assert tree_hashes(a) == tree_hashes(b) and info_a == info_b


def test_folder_missing_captions_reported(tmp_path, txt_folder):
    (txt_folder / "img07.txt").unlink()
    raw, info = prepare_folder(tmp_path, folder_params(txt_folder, "download.max_missing=0.1"))
    assert len(rows(raw)) == 19
    assert info["captions"]["images_without_captions"] == 1 and info["captions"]["first_without"] == ["img07.png"]
    (txt_folder / "img08.txt").unlink()
    (txt_folder / "img09.txt").write_text("\n  \n")
    with pytest.raises(T2IError, match=r"3 of 20 images lack captions.*e\.g\. img07\.png") as e:
        prepare_folder(tmp_path, folder_params(txt_folder), "again")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("metadata, match", [
    ('{"file_name": "img00.png", "text": "ok"}\nnot json\n', r"line 2 is not JSON"),
    ('{"text": "no file"}\n', r"line 1 has no file_name"),
    ('{"file_name": "nope.png", "text": "x"}\n', r"file_name 'nope.png' does not exist"),
    ('{"file_name": "img01.txt", "text": "x"}\n', r"'img01.txt' is not a \.jpg, \.jpeg or \.png image"),
    ('{"file_name": "img00.png", "text": "x"}\n{"file_name": "img00.png", "text": "y"}\n', r"listed twice"),
    ('{"file_name": "img00.png", "caption": "x"}\n', r"folder.caption_column: no column 'text'.*available: caption"),
    ('{"file_name": "img00.png", "text": 3}\n', r"img00.png: caption column 'text' holds '3'"),
    ('{"file_name": "img00.png", "text": ["a", 1]}\n', r"expected a string or a list of strings"),
])
def test_folder_bad_metadata(tmp_path, txt_folder, metadata, match):
    (txt_folder / "img00.txt").unlink()  # its captions must come from metadata.jsonl
    (txt_folder / "metadata.jsonl").write_text(metadata)
    with pytest.raises(T2IError, match=match) as e:
        prepare_folder(tmp_path, folder_params(txt_folder))
    assert "\n" not in str(e.value)


def test_folder_bad_class_column(tmp_path, meta_folder, txt_folder):
    with pytest.raises(T2IError, match=r"folder.class_column: no column 'kind'.*available: label, text"):
        prepare_folder(tmp_path, folder_params(meta_folder, "folder.class_column=kind"))
    with pytest.raises(T2IError, match=r"folder.class_column: 'label' needs a metadata.jsonl"):
        prepare_folder(tmp_path, folder_params(txt_folder, "folder.class_column=label"))
    write_metadata(txt_folder, [{"file_name": "img00.png", "label": "x"}])  # captions from .txt; img01.png has no class
    with pytest.raises(T2IError, match=r"img01.png: no class column 'label'"):
        prepare_folder(tmp_path, folder_params(txt_folder, "folder.class_column=label"))


def test_folder_bad_paths_and_images(tmp_path, txt_folder):
    with pytest.raises(T2IError, match=r"folder.path: .*missing is not a folder"):
        prepare_folder(tmp_path, folder_params(tmp_path / "missing"))
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / ".hidden" / "x.png").write_bytes(encoded("red"))
    (tmp_path / "empty" / "notes.txt").write_text("not an image\n")
    with pytest.raises(T2IError, match=r"no \.jpg, \.jpeg or \.png images under .*empty"):
        prepare_folder(tmp_path, folder_params(tmp_path / "empty"))
    (txt_folder / "img05.png").write_bytes(b"not a png at all")
    with pytest.raises(T2IError, match=r"cannot read image .*img05\.png"):
        prepare_folder(tmp_path, folder_params(txt_folder))


# --------------------------------------------------------------------------- hf


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A DatasetDict (train 12, test 6) with images, list captions and a ClassLabel, saved to disk."""
    datasets = pytest.importorskip("datasets")
    names = ["red", "green", "blue"]
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                                  "label": datasets.ClassLabel(names=names), "kind": datasets.Value("string"),
                                  "number": datasets.Value("int64")})

    def part(n: int, offset: int) -> datasets.Dataset:
        labels = [(i + offset) % 3 for i in range(n)]
        return datasets.Dataset.from_dict({
            "image": [{"bytes": encoded(names[c], "JPEG" if i % 2 else "PNG"), "path": None}
                      for i, c in enumerate(labels)],
            "caption": [[f"a {names[c]} square", f"{names[c]} everywhere"] for c in labels],
            "label": labels,
            "kind": [names[c].upper() for c in labels],
            "number": [10 + c for c in labels],
        }, features=features)

    path = tmp_path_factory.mktemp("hf") / "saved"
    datasets.DatasetDict({"train": part(12, 0), "test": part(6, 1)}).save_to_disk(str(path))
    return path


def hf_params(path: Path, *overrides: str):
    return params("dataset=hf", f"hf.name={path}", "hf.caption_column=caption", *overrides)


def test_hf_saved_dataset_dict(tmp_path, saved):
    out = tmp_path / "raw"
    info = hf_src.prepare_hf(out, hf_params(saved, "hf.class_column=label"), progress=False)
    assert info["dataset"] == "hf" and info["source"] == str(saved)
    assert info["counts"] == {"train": 12, "test": 6} and info["classes"] == {"train": 3, "test": 3}
    assert info["split"] == "hub splits train/test"
    samples = rows(out)
    assert [s["split"] for s in samples] == ["train"] * 12 + ["test"] * 6
    first_test = samples[12]
    assert first_test["key"] == "img_000012"
    assert first_test["meta"] == {"image_id": 12, "file": "test/0", "class_id": 1, "class_name": "green"}
    assert first_test["captions"] == ["a green square"]
    for s in samples:
        with Image.open(out / "images" / s["image"]) as im:
            assert im.size == (16, 16) and im.format == ("JPEG" if s["image"].endswith(".jpg") else "PNG")
    assert sum(s["image"].endswith(".jpg") for s in samples) == 9  # original JPEG bytes kept
    manifest = write_shards(read_raw(out), tmp_path / "shards", dataset="hf", image_size=16, samples_per_shard=8)
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {"train": 12, "test": 6}
    again = hf_src.prepare_hf(tmp_path / "again", hf_params(saved, "hf.class_column=label"), progress=False)
    assert again == info and (tmp_path / "again" / "samples.jsonl").read_bytes() == (out / "samples.jsonl").read_bytes()


def test_hf_class_types_and_seeded_split(tmp_path, saved):
    p = hf_params(saved, "hf.class_column=kind", "hf.test_split=null", "download.captions_per_image=2")
    info = hf_src.prepare_hf(tmp_path / "kind", p, progress=False)
    samples = rows(tmp_path / "kind")
    assert info["counts"] == {"train": 8, "test": 4} and info["classes"] == {"train": 2, "test": 1}
    assert info["split"] == "seeded class-disjoint, test_fraction=0.2, seed=0"
    classes = {(s["meta"]["class_id"], s["meta"]["class_name"]) for s in samples}
    assert classes == {(0, "BLUE"), (1, "GREEN"), (2, "RED")}  # sorted names
    assert all(len(s["captions"]) == 2 for s in samples)
    hf_src.prepare_hf(tmp_path / "number", hf_params(saved, "hf.class_column=number"), progress=False)
    assert {s["meta"]["class_id"] for s in rows(tmp_path / "number")} == {10, 11, 12}
    info = hf_src.prepare_hf(tmp_path / "plain", hf_params(saved, "hf.test_split=null",
                                                      "download.test_fraction=0.25"), progress=False)
    assert info["counts"] == {"train": 9, "test": 3} and info["classes"] is None
    assert info["split"] == "seeded by image, test_fraction=0.25, seed=0"
    assert all("class_id" not in s["meta"] for s in rows(tmp_path / "plain"))


def test_hf_single_saved_dataset_and_string_captions(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (16, 16), c) for c in COLOURS],
         "text": [f"a {c} square" for c in COLOURS[:5]] + [None]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "one"))
    p = params("dataset=hf", f"hf.name={tmp_path / 'one'}", "hf.test_split=null", "download.max_missing=0.2")
    info = hf_src.prepare_hf(tmp_path / "raw", p, progress=False)
    assert info["counts"]["train"] + info["counts"]["test"] == 5
    assert info["captions"]["first_without"] == ["train/5"]
    assert rows(tmp_path / "raw")[0]["captions"] == ["a red square"]
    with pytest.raises(T2IError, match=r"hf.test_split: no split 'test' in .*one \(available: train\)"):
        hf_src.prepare_hf(tmp_path / "bad", params("dataset=hf", f"hf.name={tmp_path / 'one'}"), progress=False)


@pytest.mark.parametrize("overrides, match", [
    (["hf.caption_column=text"], r"hf.caption_column: no column 'text' in .* split train "
                                 r"\(available: image, caption, label, kind, number\)"),
    (["hf.class_column=colour"], r"hf.class_column: no column 'colour'.*available: image, caption"),
    (["hf.image_column=picture"], r"hf.image_column: no column 'picture'"),
    (["hf.class_column=caption"], r"hf.class_column: 'caption' is List\(Value\('string'\)\), expected"),
    (["hf.train_split=validation"], r"hf.train_split: no split 'validation' in .* \(available: train, test\)"),
    (["hf.test_split=valid"], r"hf.test_split: no split 'valid' .*available: train, test"),
    (["hf.image_column=label"], r"row train/0: the image column holds int, not an image"),
    (["hf.caption_column=label"], r"row train/0: caption column 'label' holds '0', expected a string or a list"),
])
def test_hf_errors(tmp_path, saved, overrides, match):
    with pytest.raises(T2IError, match=match) as e:
        hf_src.prepare_hf(tmp_path / "raw", hf_params(saved, *overrides), progress=False)
    assert "\n" not in str(e.value)


def test_hf_load_error_names_dataset(tmp_path):
    pytest.importorskip("datasets")
    with pytest.raises(T2IError, match=r"hf.name: cannot load dataset 'no-such-user/no-such-set'") as e:
        hf_src.prepare_hf(tmp_path / "raw", params("dataset=hf", "hf.name=no-such-user/no-such-set"), progress=False)
    assert "\n" not in str(e.value)


def test_hf_streamed_hub_dataset_matches_saved(tmp_path, saved, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_from_disk(str(saved))
    calls = []

    def load_dataset(name, config, revision=None, streaming=False):
        calls.append((name, config, revision, streaming))
        return datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    for extra in (["hf.class_column=kind"], []):
        p = hf_params(saved, "hf.test_split=null", *extra)
        local = hf_src.prepare_hf(tmp_path / "local", p, progress=False)
        hub_id = p.model_copy(update={"hf": p.hf.model_copy(update={"name": "user/squares"})})
        hub = hf_src.prepare_hf(tmp_path / "hub", hub_id)
        assert calls[-1] == ("user/squares", None, None, True)
        assert {**hub, "source": str(saved)} == local
        assert (tmp_path / "hub" / "samples.jsonl").read_bytes() == (tmp_path / "local" / "samples.jsonl").read_bytes()
    assert "hf: " in capsys.readouterr().err  # the progress bar


def test_hf_images_by_path_keep_their_bytes(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    paths = []
    for i, colour in enumerate(COLOURS):
        paths.append(tmp_path / f"{colour}.jpg")
        paths[-1].write_bytes(encoded(colour, "JPEG"))
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [str(x) for x in paths], "text": COLOURS}, features=features)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict({"train": ds}))
    p = params("dataset=hf", "hf.name=user/by-path", "hf.test_split=null")
    hf_src.prepare_hf(tmp_path / "raw", p, progress=False)
    for s in rows(tmp_path / "raw"):
        assert (tmp_path / "raw" / "images" / s["image"]).read_bytes() == paths[s["meta"]["image_id"]].read_bytes()
    paths[2].unlink()
    with pytest.raises(T2IError, match=r"row train/2: cannot read image .*blue\.jpg"):
        hf_src.prepare_hf(tmp_path / "gone", p, progress=False)


def test_hf_image_cells():
    jpeg, gif = encoded("red", "JPEG"), encoded("red", "GIF")
    assert hf_src.image_of({"bytes": jpeg, "path": "x.jpg"}, "train/0") == jpeg  # kept byte for byte
    converted = hf_src.image_of(gif, "train/1")  # neither PNG nor JPEG: decoded, stored as PNG
    assert isinstance(converted, Image.Image) and converted.mode == "RGB"
    picture = Image.new("RGB", (4, 4))
    assert hf_src.image_of(picture, "train/2") is picture  # RawWriter encodes it as PNG
    with pytest.raises(T2IError, match=r"row train/3: cannot read image"):
        hf_src.image_of(b"junk", "train/3")
