"""Synthetic flowers: determinism, captions that match the picture, class-disjoint split."""

import io
import re
from collections import Counter

import numpy as np
import pytest

from t2i.data import synth
from t2i.data.raw import read_raw

N = 40
SIZE = 32


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def samples():
    return list(synth.flowers(N, SIZE, seed=0, test_fraction=0.2))


# One regex per template, with named groups restricted to the allowed words, so a caption
# matches exactly one template and its groups say which attribute words it used.
parse = synth.parse  # the template a caption was written from, and its slots


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_captions(samples):
    again = list(synth.flowers(N, SIZE, seed=0, test_fraction=0.2))
    assert [s.key for s in again] == [s.key for s in samples]
    for a, b in zip(samples, again):
        assert png(a.image) == png(b.image)
        assert a.captions == b.captions
        assert a.meta == b.meta and a.split == b.split


def test_prefix_is_stable_when_num_images_grows(samples):
    """Every image depends only on (seed, index): asking for fewer images gives a prefix."""
    short = list(synth.flowers(10, SIZE, seed=0, test_fraction=0.2))
    for a, b in zip(short, samples[:10]):
        assert png(a.image) == png(b.image) and a.captions == b.captions


def test_different_seed_differs(samples):
    other = list(synth.flowers(N, SIZE, seed=1, test_fraction=0.2))
    same_images = sum(png(a.image) == png(b.image) for a, b in zip(samples, other))
    same_captions = sum(a.captions == b.captions for a, b in zip(samples, other))
    assert same_images == 0
    assert same_captions == 0


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("size", [32, 64])
def test_images_are_rgb_of_requested_size(size):
    for s in synth.flowers(5, size, seed=3, test_fraction=0.2):
        assert s.image.mode == "RGB"
        assert s.image.size == (size, size)


def test_petal_colour_is_visible():
    """The described petal colour is the dominant flower colour in every picture."""
    for s in synth.flowers(40, 48, seed=5, test_fraction=0.2):
        pixels = np.asarray(s.image, dtype=np.float32)
        near = {
            name: float((np.linalg.norm(pixels - np.array(rgb, np.float32), axis=-1) < 40).mean())
            for name, rgb in synth.PETAL_COLOURS.items()
        }
        true = s.meta["attributes"]["petal_colour"]
        assert max(near, key=near.get) == true, (s.key, true, near)
        assert near[true] > 0.03, (s.key, true, near)


def test_flower_centre_region_is_not_background():
    """The middle of the picture is flower (petal or centre colour), not background."""
    for s in synth.flowers(20, 48, seed=6, test_fraction=0.2):
        a = s.meta["attributes"]
        pixels = np.asarray(s.image, dtype=np.float32)
        mid = pixels[20:28, 20:28].reshape(-1, 3)
        flower = np.array([synth.PETAL_COLOURS[a["petal_colour"]], synth.CENTRE_COLOURS[a["centre_colour"]]],
                          np.float32)
        dist = np.linalg.norm(mid[:, None, :] - flower[None], axis=-1).min(axis=1)
        assert np.median(dist) < 40, (s.key, a)


# --------------------------------------------------------------------------- captions


def test_ten_nonempty_captions_from_distinct_templates(samples):
    for s in samples:
        assert len(s.captions) == synth.CAPTIONS_PER_IMAGE == 10
        assert all(c and c.strip() == c for c in s.captions)
        templates = [parse(c)[0] for c in s.captions]
        assert len(set(templates)) == 10, (s.key, s.captions)


def test_every_caption_names_the_petal_colour(samples):
    for s in samples:
        colour = s.meta["attributes"]["petal_colour"]
        for c in s.captions:
            assert re.search(rf"\b{colour}\b", c), (colour, c)


def test_caption_words_match_meta_attributes(samples):
    for s in samples:
        a = s.meta["attributes"]
        for c in s.captions:
            _, words = parse(c)
            if words.get("p") is not None:
                assert words["p"] == a["petal_colour"], c
            if words.get("c") is not None:
                assert words["c"] == a["centre_colour"], c
            if words.get("n") is not None:
                assert words["n"] in (synth.NUMBER_WORDS[a["petal_count"]], str(a["petal_count"])), c
            if words.get("s") is not None:
                assert words["s"] in synth.SHAPE_WORDS[a["petal_shape"]], c


def test_meta_is_consistent(samples):
    table = synth.classes()
    for i, s in enumerate(samples):
        m = s.meta
        assert m["image_id"] == i and s.key == f"flower_{i:06d}"
        a = m["attributes"]
        assert table[m["class_id"]] == (a["petal_colour"], a["centre_colour"])
        assert m["class_name"] == synth.class_name(m["class_id"])
        assert a["petal_count"] in synth.PETAL_COUNTS
        assert a["petal_shape"] in synth.PETAL_SHAPES
        assert "." not in s.key


def test_centre_synonyms_all_used(samples):
    images_using = Counter()
    for s in samples:
        used = {w for c in s.captions for w in synth.CENTRE_WORDS if re.search(rf"\b{w}\b", c)}
        images_using.update(used)
    for w in ("center", "centre", "pistil", "stamen"):
        assert images_using[w] >= N // 4, images_using


def test_articles_before_vowels():
    seen_an_orange = 0
    for s in synth.flowers(60, 16, seed=2, test_fraction=0.2):
        for c in s.captions:
            assert not re.search(r"\ba [aeiou]", c), c
            assert not re.search(r"\ban [^aeiou]", c), c
            assert "a orange" not in c
            seen_an_orange += "an orange" in c
    assert seen_an_orange > 0


def test_captions_helper_uses_distinct_templates_even_with_many_draws():
    rng = np.random.default_rng(0)
    attrs = synth.Attributes("orange", "orange", 8, "round")
    caps = synth.captions(attrs, rng, n=len(synth.TEMPLATES))
    assert sorted(parse(c)[0] for c in caps) == list(range(len(synth.TEMPLATES)))
    assert all("a orange" not in c for c in caps)


# --------------------------------------------------------------------------- split


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.2, 0.5, 0.8])
def test_held_out_count_follows_test_fraction(seed, fraction):
    held = synth.test_classes(seed, fraction)
    assert len(held) == max(1, round(fraction * len(synth.classes())))


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.8, 0.9])
def test_every_colour_still_in_training(seed, fraction):
    table = synth.classes()
    held = synth.test_classes(seed, fraction)
    assert held and held <= set(range(len(table)))
    train = [table[i] for i in range(len(table)) if i not in held]
    assert {p for p, _ in train} == set(synth.PETAL_COLOURS)
    assert {c for _, c in train} == set(synth.CENTRE_COLOURS)


def test_test_classes_deterministic_and_seed_dependent():
    assert synth.test_classes(0, 0.2) == synth.test_classes(0, 0.2)
    assert synth.test_classes(0, 0.2) != synth.test_classes(1, 0.2)


def test_split_is_class_disjoint(samples):
    held = synth.test_classes(0, 0.2)
    train_classes = {s.meta["class_id"] for s in samples if s.split == "train"}
    test_classes = {s.meta["class_id"] for s in samples if s.split == "test"}
    assert train_classes and test_classes
    assert not train_classes & test_classes
    for s in samples:
        assert s.split == ("test" if s.meta["class_id"] in held else "train")


def test_write_roundtrips_through_raw_layout(tmp_path):
    info = synth.write(tmp_path / "raw", 12, 32, seed=4, test_fraction=0.3)
    back = list(read_raw(tmp_path / "raw"))
    fresh = list(synth.flowers(12, 32, seed=4, test_fraction=0.3))
    assert [s.key for s in back] == [s.key for s in fresh]
    for a, b in zip(back, fresh):
        assert a.captions == b.captions and a.meta == b.meta and a.split == b.split
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert info["counts"] == {
        "train": sum(s.split == "train" for s in fresh),
        "test": sum(s.split == "test" for s in fresh),
    }
    held = synth.test_classes(4, 0.3)
    assert {c["class_id"] for c in info["classes"] if c["split"] == "test"} == held


# --------------------------------------------------------------------------- named attributes


def test_each_caption_names_what_its_template_names():
    s = next(synth.flowers(1, SIZE, seed=0, test_fraction=0.2))
    slots = {"p": "petal_colour", "c": "centre_colour", "n": "petal_count", "s": "petal_shape"}
    for caption, named in zip(s.captions, s.meta["named"]):
        template = synth.TEMPLATES[parse(caption)[0]]
        assert named == [a for a in synth.ATTRIBUTES if any(f"{{{k}}}" in template for k, v in slots.items() if v == a)]
    assert ["petal_colour", "petal_count"] == synth.named("a flower with five red petals")  # no centre


def test_alter_changes_one_named_word_and_keeps_the_rest():
    c = "this flower has 5 orange petals and an orange center"
    assert synth.alter(c, "centre_colour", "black") == "this flower has 5 orange petals and a black center"
    assert synth.alter(c, "petal_colour", "red") == "this flower has 5 red petals and an orange center"
    assert synth.alter(c, "petal_count", 7) == "this flower has 7 orange petals and an orange center"  # digits stay digits
    assert synth.alter("a flower with oval red petals and a green pistil", "petal_shape", "pointed") == \
        "a flower with sharp red petals and a green pistil"  # the same synonym slot
    with pytest.raises(ValueError, match="does not name centre_colour"):
        synth.alter("a flower with five red petals", "centre_colour", "black")
    with pytest.raises(ValueError, match="matches 0 templates"):
        synth.named("a free-text caption")
