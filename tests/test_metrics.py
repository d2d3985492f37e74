"""Each metric on controlled inputs, the registry, and the Inception skip path."""

import math
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i import T2IError
from t2i.evaluator import Evaluator
from t2i.metrics import METRICS, EvalContext, MetricSkipped, get

S = 32


def context(evaluator, real, fake=None, emb=None, all_emb=None, meta=None, **kw) -> EvalContext:
    n = len(real)
    all_emb = all_emb if all_emb is not None else torch.randn(n, 2, 8)
    return EvalContext(evaluator=evaluator, real=real, fake=real if fake is None else fake,
                       emb=all_emb[:, 0] if emb is None else emb, all_emb=all_emb, pick=torch.zeros(n, dtype=torch.long),
                       meta=meta if meta is not None else [{"class_id": i} for i in range(n)],
                       batch_size=16, **kw)


# --------------------------------------------------------------------------- registry


def test_registry_knows_every_metric() -> None:
    assert {"attribute_accuracy", "r_precision", "diversity", "phrasing", "frechet_distance", "inception"} <= set(METRICS)
    assert get(["r_precision", "attribute_accuracy"]) == [METRICS["r_precision"], METRICS["attribute_accuracy"]]


def test_unknown_metric_is_named() -> None:
    with pytest.raises(T2IError, match=r"unknown metric 'fid_typo' \(known: .*r_precision"):
        get(["attribute_accuracy", "fid_typo"])
    with pytest.raises(T2IError, match="'r_precision' is listed twice"):
        get(["r_precision", "r_precision"])


# --------------------------------------------------------------------------- attribute accuracy


class ColourStub(nn.Module):
    """Reads "colour" off the mean of the red channel: > 0 -> "red", else "blue"."""

    attributes = {"colour": ["blue", "red"], "size": ["big", "small"]}

    def forward(self, x):
        r = x[:, 0].mean(dim=(1, 2))  # (B,)
        logits = torch.stack([-r, r], dim=1)  # (B, 2)
        return {"logits": {"colour": logits, "size": torch.zeros_like(logits)},
                "proj": torch.zeros(len(x), 8), "features": logits}


def colour_images(colours: list[str]) -> tuple[torch.Tensor, list[dict]]:
    sign = torch.tensor([1.0 if c == "red" else -1.0 for c in colours])
    images = sign[:, None, None, None] * 0.5 * torch.ones(len(colours), 3, S, S)
    meta = [{"attributes": {"colour": c, "size": "small"}} for c in colours]
    return images, meta


def test_attribute_accuracy_on_controlled_images() -> None:
    colours = ["red"] * 6 + ["blue"] * 2
    real, meta = colour_images(colours)
    fn = METRICS["attribute_accuracy"]

    same = fn(context(ColourStub(), real, meta=meta))
    assert same["attr/colour/real"] == 1.0
    assert same["attr/colour/fake"] == same["attr/colour/real"]
    assert same["attr/colour/chance"] == pytest.approx(0.75)  # majority value: red, 6 of 8
    assert same["attr/colour/chance_uniform"] == 0.5
    assert same["attr/size/real"] == 0.0  # always predicts "big"; every image is "small"

    flipped = fn(context(ColourStub(), real, fake=-real, meta=meta))
    assert flipped["attr/colour/fake"] == 0.0 and flipped["attr/colour/real"] == 1.0
    assert flipped["attr/mean/fake"] == 0.0 and flipped["attr/mean/real"] == 0.5


def test_attribute_accuracy_skips_values_unseen_in_training() -> None:
    real, meta = colour_images(["red", "blue", "red"])
    meta[0]["attributes"]["colour"] = "green"  # not in the evaluator's vocabulary
    out = METRICS["attribute_accuracy"](context(ColourStub(), real, meta=meta))
    assert out["attr/colour/real"] == 1.0 and out["attr/colour/chance"] == 0.5


def test_attribute_accuracy_says_why_it_is_skipped() -> None:
    real, meta = colour_images(["red", "blue"])
    unseen = [{"class_id": 7}, {"class_id": 8}]  # class head, class-disjoint test split

    class ClassStub(ColourStub):
        attributes = {"class": ["1", "2"]}

    with pytest.raises(MetricSkipped, match="class-disjoint"):
        METRICS["attribute_accuracy"](context(ClassStub(), real, meta=unseen))

    class NoLabels(ColourStub):
        attributes: dict = {}

    with pytest.raises(MetricSkipped, match="neither attribute nor class labels"):
        METRICS["attribute_accuracy"](context(NoLabels(), real, meta=[{}, {}]))


def test_fake_equal_real_gives_equal_accuracy_with_a_real_evaluator() -> None:
    torch.manual_seed(0)
    ev = Evaluator({"colour": ["blue", "red"]}, emb_dim=8, image_size=S, feat_dim=32).eval()
    real, meta = colour_images(["red", "blue"] * 5)
    real = real + 0.3 * torch.randn_like(real)
    out = METRICS["attribute_accuracy"](context(ev, real, fake=real.clone(), meta=meta))
    assert out["attr/colour/fake"] == out["attr/colour/real"]


# --------------------------------------------------------------------------- R-precision


class LookupStub(nn.Module):
    """A perfect text-image scorer: pixel (0, 0, 0) holds an index into a table of embeddings."""

    attributes: dict = {}

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, x):
        idx = (x[:, 0, 0, 0] * 1000).round().long()  # (B,)
        proj = F.normalize(self.table[idx], dim=-1)
        return {"logits": {}, "proj": proj, "features": proj}


def indexed_images(n: int) -> torch.Tensor:
    images = torch.zeros(n, 3, S, S)
    images[:, 0, 0, 0] = torch.arange(n) / 1000
    return images


def retrieval_case(n_classes: int, per_class: int, captions: int = 3, dim: int = 32):
    n = n_classes * per_class
    gen = torch.Generator().manual_seed(1)
    all_emb = torch.randn(n, captions, dim, generator=gen)
    meta = [{"class_id": i // per_class} for i in range(n)]
    return n, all_emb, meta


def test_r_precision_perfect_scorer_and_shuffled_images() -> None:
    n, all_emb, meta = retrieval_case(n_classes=20, per_class=10)
    emb = all_emb[:, 1]
    real = indexed_images(n)
    fake = real[torch.randperm(n, generator=torch.Generator().manual_seed(2))]
    out = METRICS["r_precision"](context(LookupStub(emb), real, fake=fake, emb=emb,
                                         all_emb=all_emb, meta=meta))
    assert out["r_precision/real"] == 1.0
    assert out["r_precision/chance"] == pytest.approx(0.01) and out["r_precision/candidates"] == 100
    assert out["r_precision/fake"] < 0.08  # chance is 0.01
    assert out["r_precision/shuffled_real"] < 0.08  # the lookup is per caption, not per class


def test_r_precision_with_few_candidates_reports_effective_chance() -> None:
    n, all_emb, meta = retrieval_case(n_classes=3, per_class=10)
    emb = all_emb[:, 0]
    ctx = context(LookupStub(emb), indexed_images(n), emb=emb, all_emb=all_emb, meta=meta, seed=3)
    out = METRICS["r_precision"](ctx)
    assert out["r_precision/candidates"] == 21  # own caption + the 20 images of the other classes
    assert out["r_precision/chance"] == pytest.approx(1 / 21)
    assert out["r_precision/real"] == 1.0
    assert METRICS["r_precision"](ctx) == out  # seeded


def test_r_precision_needs_two_classes() -> None:
    n, all_emb, meta = retrieval_case(n_classes=1, per_class=5)
    with pytest.raises(MetricSkipped, match="two classes"):
        METRICS["r_precision"](context(LookupStub(all_emb[:, 0]), indexed_images(n),
                                       all_emb=all_emb, meta=meta))


# --------------------------------------------------------------------------- Frechet distance


def test_frechet_distance_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    torch.manual_seed(0)
    ev = Evaluator({"colour": ["blue", "red"]}, emb_dim=8, image_size=S, feat_dim=16).eval()
    real = torch.rand(80, 3, S, S) * 1.6 - 0.8
    fn = METRICS["frechet_distance"]
    same = fn(context(ev, real, fake=real.clone()))["fd_evaluator"]
    small = fn(context(ev, real, fake=(real + 0.1).clamp(-1, 1)))["fd_evaluator"]
    large = fn(context(ev, real, fake=(real + 0.5).clamp(-1, 1)))["fd_evaluator"]
    assert small > 0 and large > 3 * small  # an untrained evaluator: small features, small distances
    assert abs(same) < 1e-4 * small
    assert math.isfinite(large)


# --------------------------------------------------------------------------- Inception FID / IS


def test_inception_skips_without_torch_fidelity(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import raises ImportError
    real = torch.zeros(4, 3, S, S)
    with pytest.raises(MetricSkipped, match="torch-fidelity is not importable"):
        METRICS["inception"](context(ColourStub(), real, inception_weights="weights.pth"))


def test_inception_skips_offline_without_weights() -> None:
    pytest.importorskip("torch_fidelity")
    with pytest.raises(MetricSkipped, match="no inception_weights"):
        METRICS["inception"](context(ColourStub(), torch.zeros(4, 3, S, S)))


def test_inception_runs_with_random_weights(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch_fidelity")
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    # A randomly initialised InceptionV3 with the real layer shapes: skip the download and the load.
    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
    torch.manual_seed(0)
    weights = tmp_path / "inception-random.pth"
    torch.save(fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict(), weights)
    monkeypatch.undo()

    real = torch.rand(12, 3, S, S) * 2 - 1
    out = METRICS["inception"](context(ColourStub(), real, fake=real.flip(-1),
                                       inception_weights=str(weights)))
    assert set(out) == {"inception/fid", "inception/is_mean", "inception/is_std", "inception/n_fake",
                        "inception/n_real", "inception/resolution"}
    assert out["inception/n_fake"] == out["inception/n_real"] == 12 and out["inception/resolution"] == S
    assert all(math.isfinite(v) for v in out.values())


# --------------------------------------------------------------------------- diversity


class FeatureStub(nn.Module):
    """Features = the image's mean colour per channel and quadrant (12 numbers)."""

    attributes: dict = {}

    def forward(self, x):
        q = F.adaptive_avg_pool2d(x, 2).flatten(1)  # (B, 12)
        return {"logits": {}, "proj": torch.zeros(len(x), 8), "features": q}


def classes_of_varied_images(n_classes=6, per_class=10, seed=0):
    """Real images: per class a base colour plus per-image random blotches (real variation)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n_classes, 3, 1, 1, generator=g) * 2 - 1
    cls = torch.arange(n_classes).repeat_interleave(per_class)
    images = (base[cls] + 0.5 * torch.randn(len(cls), 3, 2, 2, generator=g).repeat_interleave(S // 2, -1)
              .repeat_interleave(S // 2, -2)).clamp(-1, 1)
    return images, [{"class_id": int(c)} for c in cls]


def test_diversity_is_zero_when_the_noise_changes_nothing() -> None:
    real, meta = classes_of_varied_images()
    same = lambda z, e: real[:1].expand(len(z), -1, -1, -1)  # noqa: E731
    out = METRICS["diversity"](context(FeatureStub(), real, meta=meta, generate=same, z_dim=4))
    assert out["diversity/generated"] == 0.0 and out["diversity/ratio"] == 0.0
    assert out["diversity/pixel_ratio"] == 0.0 and out["diversity/real"] > 0
    assert out["diversity/captions"] == 6.0


def test_diversity_of_real_images_against_real_images_is_about_one() -> None:
    real, meta = classes_of_varied_images(per_class=20)
    cls = torch.tensor([m["class_id"] for m in meta])
    emb = torch.nn.functional.one_hot(cls, 6).float()  # the caption says the class
    all_emb = emb[:, None].expand(-1, 2, -1)
    g = torch.Generator().manual_seed(1)

    def draw_real(z, e):  # "generates" other real images of the caption's class
        idx = (cls == e[0].argmax()).nonzero().flatten()
        return real[idx[torch.randint(len(idx), (len(z),), generator=g)]]

    out = METRICS["diversity"](context(FeatureStub(), real, emb=emb, all_emb=all_emb, meta=meta,
                                       generate=draw_real, z_dim=4))
    assert 0.75 < out["diversity/ratio"] < 1.25
    assert 0.75 < out["diversity/pixel_ratio"] < 1.25


def test_diversity_skips_without_generator_or_classes() -> None:
    real, meta = classes_of_varied_images()
    with pytest.raises(MetricSkipped, match="needs the generator"):
        METRICS["diversity"](context(FeatureStub(), real, meta=meta))
    with pytest.raises(MetricSkipped, match="at least two images"):
        METRICS["diversity"](context(FeatureStub(), real, generate=lambda z, e: real[: len(z)], z_dim=4))


# --------------------------------------------------------------------------- phrasing

PETALS, CENTRES = ["red", "blue", "white"], ["yellow", "black"]


class ColourReader(nn.Module):
    """Reads petal colour off channel 0 and centre colour off channel 1 (the index / 10)."""

    attributes = {"petal_colour": PETALS, "centre_colour": CENTRES}

    def forward(self, x):
        p, c = ((x[:, ch].mean(dim=(1, 2)) * 10).round().long() for ch in (0, 1))
        return {"logits": {"petal_colour": F.one_hot(p.clamp(0, 2), 3).float(),
                           "centre_colour": F.one_hot(c.clamp(0, 1), 2).float()},
                "proj": torch.zeros(len(x), 8), "features": x.mean(dim=(2, 3))}


def paint(z, emb):  # a generator that draws exactly what the embedding (petal, centre index) says
    out = torch.zeros(len(z), 3, S, S)
    out[:, 0], out[:, 1] = emb[:, 0, None, None] / 10, emb[:, 1, None, None] / 10
    return out


def reader_of_novel_wording(texts):
    """A text encoder that understands the novel templates: (petal index, centre index)."""
    from t2i.metrics.phrasing import NOVEL_TEMPLATES
    import re

    rows = []
    for t in texts:
        for tpl in NOVEL_TEMPLATES:
            pattern = re.escape(tpl).replace(r"\{p\}", "(?P<p>\\w+)").replace(r"\{c\}", "(?P<c>\\w+)")
            m = re.fullmatch(pattern.replace(r"\{n\}", "\\w+").replace(r"\{s\}", "\\w+"), t)
            if m:
                rows.append([PETALS.index(m["p"]), CENTRES.index(m["c"])])
                break
        else:
            raise AssertionError(f"not a novel caption: {t}")
    return torch.tensor(rows, dtype=torch.float32)


def phrasing_context(encode):
    metas = [{"class_id": i % 6, "attributes": {"petal_colour": PETALS[i % 3], "centre_colour": CENTRES[i % 2],
                                                "petal_count": 5, "petal_shape": "round"}} for i in range(24)]
    emb = torch.tensor([[i % 3, i % 2] for i in range(24)], dtype=torch.float32)  # the template captions
    real = paint(emb, emb)
    return context(ColourReader(), real, emb=emb, all_emb=emb[:, None].expand(-1, 2, -1), meta=metas,
                   generate=paint, z_dim=4, encode=encode)


def test_phrasing_compares_novel_wording_with_the_templates() -> None:
    out = METRICS["phrasing"](phrasing_context(reader_of_novel_wording))
    assert out["phrasing/petal_colour/template"] == 1.0 and out["phrasing/petal_colour/novel"] == 1.0
    assert out["phrasing/centre_colour/ratio"] == 1.0 and out["phrasing/images"] == 24.0

    lost = METRICS["phrasing"](phrasing_context(lambda texts: torch.zeros(len(texts), 2)))  # wording not understood
    assert lost["phrasing/petal_colour/template"] == 1.0 and lost["phrasing/petal_colour/novel"] == pytest.approx(1 / 3)
    assert lost["phrasing/petal_colour/ratio"] == pytest.approx(1 / 3)


def test_novel_captions_are_never_training_captions() -> None:
    from t2i.data import synth
    from t2i.metrics.phrasing import novel_captions

    samples = list(synth.flowers(300, 16))
    novel = novel_captions([s.meta for s in samples], torch.Generator().manual_seed(0))
    assert not set(novel) & {c for s in samples for c in s.captions}
    assert len(set(novel)) > 100


def test_phrasing_skips_without_encoder_or_colour_labels() -> None:
    real, meta = colour_images(["red", "blue"])
    with pytest.raises(MetricSkipped, match="text encoder"):
        METRICS["phrasing"](context(ColourStub(), real, meta=meta, generate=paint, z_dim=4))
    with pytest.raises(MetricSkipped, match="petal_colour and centre_colour labels"):
        METRICS["phrasing"](context(ColourStub(), real, meta=meta, generate=paint, z_dim=4, encode=lambda t: None))


# --------------------------------------------------------------------------- named captions


def test_a_caption_that_does_not_name_the_colour_is_left_out_of_colour_accuracy() -> None:
    """The generator stub draws red only when its caption says red; captions that say nothing
    of the colour (here: the second of each image's two) would make it draw blue."""
    colours = ["red", "red", "red", "blue"]
    real, meta = colour_images(colours)
    says = torch.tensor([[1.0, 0.0] if c == "red" else [-1.0, 0.0] for c in colours])  # caption 1: no colour
    all_emb = torch.stack([torch.stack([says[i], torch.tensor([-1.0, 0.0])]) for i in range(4)])  # (4, 2, 2)
    for m in meta:
        m["named"] = [["colour", "size"], ["size"]]
    meta[3]["named"] = [["size"], ["size"]]  # the blue flower's captions never name its colour

    def draw(z, emb):  # red where the caption's first number is positive, else blue
        return torch.where(emb[:, 0] > 0, 1.0, -1.0)[:, None, None, None] * 0.5 * torch.ones(len(emb), 3, S, S)

    ctx = context(ColourStub(), real, fake=draw(None, all_emb[:, 1]), all_emb=all_emb, meta=meta,
                  generate=draw, z_dim=4)
    out = METRICS["attribute_accuracy"](ctx)
    assert out["attr/captions"] == "named"
    assert out["attr/colour/fake"] == 1.0 and out["attr/colour/pairs"] == 3  # image 3 left out
    assert out["attr/colour/chance"] == 1.0  # the three counted are all red
    assert out["attr/size/pairs"] == 4
    for m in meta:
        del m["named"]  # a source that cannot know: every image's (second) caption is scored
    unnamed = METRICS["attribute_accuracy"](context(ColourStub(), real, fake=draw(None, all_emb[:, 1]),
                                                   all_emb=all_emb, meta=meta, generate=draw, z_dim=4))
    assert unnamed["attr/captions"] == "any" and unnamed["attr/colour/fake"] == 0.25 and unnamed["attr/colour/pairs"] == 4


def test_r_precision_draws_only_mismatches_that_contradict_the_caption() -> None:
    """Image 0's caption names only the colour (red); image 1 is red too (another class), so its
    captions never contradict image 0's: only image 2's can be mismatches."""
    meta = [{"class_id": 0, "attributes": {"colour": "red", "size": "big"}, "named": [["colour"]]},
            {"class_id": 1, "attributes": {"colour": "red", "size": "small"}, "named": [["colour", "size"]]},
            {"class_id": 2, "attributes": {"colour": "blue", "size": "big"}, "named": [["colour"]]}]
    from t2i.metrics.r_precision import candidates

    all_emb = torch.arange(3.0)[:, None, None].expand(3, 1, 4).contiguous()  # caption of image j = j
    ctx = context(ColourStub(), torch.zeros(3, 3, S, S), all_emb=all_emb, meta=meta)
    cands = candidates(ctx)  # (3, 1 + 1, 4): one allowed mismatch each
    assert cands.shape == (3, 2, 4) and cands[0, 1, 0].item() == 2.0  # image 1's caption is no mismatch for 0
    assert cands[1, 1, 0].item() == 2.0  # nor image 0's for 1: they agree on the colour both name


# --------------------------------------------------------------------------- d_check and g_check


def slot_encoder(texts):
    """One-hot slots of what a synthetic caption names: petal colour, centre colour, count, shape
    (zeros for a caption no template wrote, such as a probe with its colours swapped)."""
    from t2i import probes
    from t2i.data import synth

    vocab = {"p": list(synth.PETAL_COLOURS), "c": list(synth.CENTRE_COLOURS),
             "n": [*synth.NUMBER_WORDS.values()], "s": [w for ws in synth.SHAPE_WORDS.values() for w in ws]}
    out = torch.zeros(len(texts), sum(len(v) for v in vocab.values()))
    for i, t in enumerate(texts):
        try:
            words, offset = synth.parse(t, synth.TEMPLATES + probes.ALL_FOUR)[1], 0
        except ValueError:
            continue
        for k, v in vocab.items():
            w = words.get(k)
            if w is not None:
                w = synth.NUMBER_WORDS.get(int(w), w) if w.isdigit() else w
                out[i, offset + v.index(w)] = 1.0
            offset += len(v)
    return out.numpy()


class PetalColourD(nn.Module):
    """A discriminator that checks only the petal colour: the caption's petal-colour slot for the
    colour the image carries (its index, written into the red channel)."""

    def forward(self, img, emb):
        colour = ((img[:, 0, 0, 0] + 1) * 10).round().long()  # (B,)
        return emb[torch.arange(len(emb)), colour]  # (B,)


def test_d_check_is_one_on_the_checked_attribute_and_a_half_on_the_others() -> None:
    from t2i import probes
    from t2i.data import synth

    samples = list(synth.flowers(60, 16, seed=0, test_fraction=0.3))
    test = [(s.key, s.captions, s.meta) for s in samples if s.split == "test"]
    spec = probes.probe_captions(test, [s.meta for s in samples if s.split == "train"])
    found = probes.with_embeddings(spec, slot_encoder)
    colour = torch.tensor([list(synth.PETAL_COLOURS).index(m["attributes"]["petal_colour"]) for _, _, m in test])
    images = (colour.float() / 10 - 1)[:, None, None, None].expand(-1, 3, 4, 4)
    keys = [k for k, _, _ in test]
    shares = probes.caption_check(PetalColourD(), images, found, keys, batch_size=5)
    assert shares == {"petal_colour": 1.0, "centre_colour": 0.5, "petal_count": 0.5, "petal_shape": 0.5}
    assert all(len(found["d_check"][a]["index"]) == len(test) for a in shares)  # every test image has a naming caption
    half = probes.caption_check(PetalColourD(), images[: len(test) // 2], found, keys[: len(test) // 2])
    assert half["petal_colour"] == 1.0  # probes of images not given are left out


def test_g_check_reads_what_a_perfect_and_a_blind_generator_draw(monkeypatch) -> None:
    from t2i import probes
    from t2i.data import synth

    samples = list(synth.flowers(60, 16, seed=0, test_fraction=0.3))
    spec = probes.probe_captions([(s.key, s.captions, s.meta) for s in samples if s.split == "test"],
                        [s.meta for s in samples if s.split == "train"])
    found = probes.with_embeddings(spec, slot_encoder)
    colours = list(synth.PETAL_COLOURS)

    class PetalReader(nn.Module):
        attributes = {"petal_colour": colours}

        def forward(self, x):
            logits = F.one_hot(((x[:, 0, 0, 0] + 1) * 10).round().long(), len(colours)).float()
            return {"logits": {"petal_colour": logits}, "proj": torch.zeros(len(x), 8), "features": logits}

    def perfect(z, emb):  # draws the petal colour its caption names
        return (emb[:, :10].argmax(1).float() / 10 - 1)[:, None, None, None].expand(-1, 3, S, S)

    ctx = context(PetalReader(), torch.zeros(2, 3, S, S), probes=found, generate=perfect, z_dim=4)
    out = METRICS["g_check"](ctx)
    assert out["g_check/seen/petal_colour"] == 1.0 == out["g_check/unseen/petal_colour"]
    assert out["g_check/seen/images"] == probes.G_CHECK_CAPTIONS
    blind = context(PetalReader(), torch.zeros(2, 3, S, S), probes=found, generate=lambda z, e: perfect(z, e[:1]).expand(len(e), -1, -1, -1), z_dim=4)
    assert METRICS["g_check"](blind)["g_check/unseen/petal_colour"] < 0.5
    with pytest.raises(MetricSkipped, match="no attribute probes"):
        METRICS["g_check"](context(PetalReader(), torch.zeros(2, 3, S, S)))


# --------------------------------------------------------------------------- silhouette


def pixels(image) -> torch.Tensor:
    """A PIL image -> (3, S, S) float in [-1, 1]."""
    import numpy as np

    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 127.5 - 1


def blob(seed: int, size: int = 64) -> torch.Tensor:
    """A flower-coloured blob on a flat green background: a disc with random bumps of 1-5 lobes."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    dy, dx = ys - size / 2, xs - size / 2
    theta = torch.atan2(dy, dx)
    bumps = sum(0.12 * torch.rand(1, generator=gen) * torch.cos(k * theta + 6.3 * torch.rand(1, generator=gen))
                for k in range(1, 6))
    inside = (dy ** 2 + dx ** 2).sqrt() < size * 0.3 * (1 + bumps)
    image = torch.tensor([-0.5, 0.0, -0.6])[:, None, None].expand(3, size, size).clone()
    image[:, inside] = torch.tensor([0.9, -0.8, -0.7])[:, None]  # red
    return image


def test_silhouette_reads_count_and_shape_of_drawn_flowers() -> None:
    import numpy as np

    from t2i.data import synth
    from t2i import outline

    attrs = [synth.Attributes("lavender", "yellow", k, s) for k in synth.PETAL_COUNTS for s in synth.PETAL_SHAPES]
    images = torch.stack([pixels(synth.draw_flower(a, np.random.default_rng([seed, 7]), 64))
                          for seed in range(2) for a in attrs])  # (24, 3, 64, 64)
    got = outline.read(images)
    assert got["count"].tolist() == [a.petal_count for a in attrs] * 2
    assert got["pointed"].tolist() == [a.petal_shape == "pointed" for a in attrs] * 2
    assert got["regularity"].min() >= outline.PETALLED
    blobs = outline.read(torch.stack([blob(seed) for seed in range(8)]))
    assert blobs["regularity"].max() < outline.PETALLED  # bumps on a disc are not petals


def flower_context(generate, n: int = 60) -> EvalContext:
    from t2i.data import synth

    test = [s for s in synth.flowers(n, 64, seed=0, test_fraction=0.3) if s.split == "test"]
    real = torch.stack([pixels(s.image) for s in test])
    all_emb = torch.arange(len(test)).float()[:, None, None].expand(-1, 10, 1)  # (N, 10, 1): each caption says its image
    return EvalContext(evaluator=None, real=real, fake=real, emb=all_emb[:, 0], all_emb=all_emb,
                       pick=torch.zeros(len(test), dtype=torch.long), meta=[s.meta for s in test],
                       generate=generate, z_dim=2)


def test_silhouette_of_a_copying_and_a_blob_generator() -> None:
    copies = flower_context(None)
    copies.generate = lambda z, emb: copies.real[emb[:, 0].long()]  # draws exactly the test image its caption is of
    out = METRICS["silhouette"](copies)
    assert out["silhouette/count/fake"] == out["silhouette/count/real"] == 1.0
    assert out["silhouette/shape/fake"] == out["silhouette/shape/real"] >= 0.9  # 99% of the default's real flowers
    assert out["silhouette/petalled/fake"] == out["silhouette/petalled/real"] == 1.0
    assert out["silhouette/count/pairs"] > 0 and out["silhouette/shape/pairs"] > 0

    blobs = flower_context(lambda z, emb: torch.stack([blob(int(i)) for i in emb[:, 0]]))
    out = METRICS["silhouette"](blobs)
    assert out["silhouette/petalled/fake"] == 0.0 and out["silhouette/petalled/real"] == 1.0
    assert out["silhouette/regularity/fake"] < 0.6 < 0.9 < out["silhouette/regularity/real"]
    assert out["silhouette/count/fake"] < 0.5


def test_silhouette_says_why_it_is_skipped() -> None:
    with pytest.raises(MetricSkipped, match="no petal_count and petal_shape"):
        METRICS["silhouette"](context(ColourStub(), torch.zeros(2, 3, S, S), generate=lambda z, e: z))
    with pytest.raises(MetricSkipped, match="needs the generator"):
        METRICS["silhouette"](flower_context(None))
