"""The grounded text code (t2i/ground.py), which captions fit which images (t2i/named.py), hard
wrong captions and G's matching loss (t2i/gan.py, t2i/families/common.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from t2i.checkpoint import CHECKPOINT, GENERATOR, load_discriminator, load_generator
from t2i.data import synth
from t2i.data.loader import batches
from t2i.gan import gan_step, model_config, step_inputs, trainables
from t2i.wrong import pick_wrong_hard, wrong_mask
from t2i.ground import Grounding, load_grounding, train_grounding
from t2i.losses import contrastive_loss, ranking_loss
from t2i.named import fits
from t2i.params import PLAIN, GroundParams, TrainParams
from t2i.train import DataSpec, training_loop

TINY = dict(ngf=8, ndf=8, z_dim=8, proj_dim=8, batch_size=8, epochs=2, shuffle_buffer=16, threads=1, **PLAIN)


def tiny(**levers) -> TrainParams:
    """The tiny plain run with ``levers`` on."""
    return TrainParams(**{**TINY, **levers})

DATA = DataSpec(emb_dim=16, image_size=32, text_model="bag-of-words")
TINY_GROUND = GroundParams(epochs=2, batch_size=8, dim=8, hidden=16, width=8, glimpses=2, threads=1)
LEVERS = dict(text="grounded", match_coef=0.5, wrong="hard", ac_coef=0.5, d_contrast_coef=0.5, d_contrast_negatives=3,
              ground_d_coef=0.5)


def flower(petal, centre, count=5, shape="round", named=(("petal_colour", "centre_colour"),)):
    return {"attributes": {"petal_colour": petal, "centre_colour": centre, "petal_count": count,
                           "petal_shape": shape}, "named": [list(n) for n in named], "class_id": 0}


@pytest.fixture(scope="module")
def data(train_urls) -> DataSpec:
    """DATA with the training samples' attribute values (AC-GAN's labels)."""
    from dataclasses import replace

    from t2i.named import discover_attributes

    return replace(DATA, attributes=discover_attributes([m for b in batches(train_urls, 64, drop_last=False)
                                                      for m in b["meta"]]))


@pytest.fixture(scope="module")
def grounding(train_urls, tmp_path_factory) -> Grounding:
    out = tmp_path_factory.mktemp("ground")
    train_grounding(train_urls, out, TINY_GROUND, progress=False)
    return load_grounding(out / "ground.pt")


def test_a_caption_fits_the_images_whose_attributes_it_names():
    metas = [flower("red", "yellow"), flower("red", "black"), flower("red", "black", named=[("petal_colour",)]),
             flower("blue", "yellow", named=[("centre_colour",)])]
    f = fits(metas, torch.zeros(4, 1, dtype=torch.long), [["c"]] * 4)
    # Column j: does sample j's caption describe row i's image?
    assert f.tolist() == [[True, False, True, True],   # red/yellow: "red" fits, "yellow centre" fits
                          [False, True, True, False],  # red/black
                          [False, True, True, False],
                          [False, False, False, True]]  # blue/yellow: no "red ..." caption fits it


def test_without_named_attributes_a_caption_fits_its_class_and_its_own_words():
    metas = [{"class_id": 0}, {"class_id": 0}, {"class_id": 1}, {"class_id": -1}]
    caps = [["a bird"], ["a red bird"], ["a red bird"], ["a blue bird"]]
    f = fits(metas, torch.zeros(4, 1, dtype=torch.long), caps)
    assert f.tolist() == [[True, True, False, False],
                          [True, True, True, False],  # sample 2's words are one of sample 1's captions
                          [False, True, True, False],
                          [False, False, False, True]]


def test_a_guarded_hard_wrong_caption_never_describes_the_image():
    """A batch whose items differ only in centre colour still yields wrong captions (those naming
    the centre), and none of them describes the image it is shown with."""
    g = torch.Generator().manual_seed(0)
    centres = list(synth.CENTRE_COLOURS)
    metas = [flower("red", centres[i % 5], named=[("petal_colour",), ("petal_colour", "centre_colour")])
             for i in range(10)]
    emb = torch.randn(10, 16, generator=g)
    for _ in range(20):
        picks = torch.randint(0, 2, (10, 1), generator=g)
        f = fits(metas, picks, [["a", "b"]] * 10)
        for fraction in (0.0, 0.5, 1.0):
            wrong = pick_wrong_hard(f, emb, fraction, g)
            has = (~f).any(dim=1)  # items some other item's caption contradicts
            assert has.any() and not f[torch.arange(10), wrong][has].any()
    hardest = pick_wrong_hard(torch.eye(3, dtype=torch.bool), torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1]]), 1.0, g)
    assert hardest.tolist() == [1, 0, 1]  # the most similar other caption


def test_the_cosine_guard_keeps_paraphrases_out_on_free_text():
    g = torch.Generator().manual_seed(0)
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]])
    no_fit = torch.eye(3, dtype=torch.bool)
    assert pick_wrong_hard(no_fit, emb, 1.0, g)[0] == 1  # unguarded: the near-copy
    assert pick_wrong_hard(no_fit, emb, 1.0, g, max_cos=0.9)[0] == 2
    only_copy = torch.tensor([[True, False, True], [False, True, True], [True, True, True]])  # 0's only non-fit: 1
    for fraction in (0.0, 1.0):  # the guard cannot leave 0 without a candidate: the near-copy, never a fitting one
        assert pick_wrong_hard(only_copy, emb, fraction, g, max_cos=0.9)[0] == 1
    everyone = torch.ones(3, 3, dtype=torch.bool)  # every caption fits every image: any other item, as before
    assert (pick_wrong_hard(everyone, emb, 1.0, g) != torch.arange(3)).all()


def test_the_matching_loss_keeps_captions_that_ask_nothing_contradicting_out_of_its_negatives():
    from t2i.named import agrees

    metas = [flower("red", "yellow", 5, named=[("petal_colour",)]), flower("red", "black", 6),
             flower("blue", "yellow", named=[("petal_colour", "petal_count")])]
    a = agrees(metas, torch.zeros(3, 1, dtype=torch.long), [["c"]] * 3)
    # "a red flower" and "red petals, black centre" ask nothing contradicting: a fake drawn from the
    # first may show a black centre. A real red/yellow flower does not fit the second (fits).
    assert a.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert not fits(metas, torch.zeros(3, 1, dtype=torch.long), [["c"]] * 3)[0, 1]


def test_the_contrastive_term_is_lower_for_aligned_pairs_and_skips_fitting_negatives():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    b = F.normalize(a + 0.1 * torch.randn(8, 4, generator=g), dim=-1)
    assert contrastive_loss(a, b, 10.0) < contrastive_loss(a, b[torch.randperm(8, generator=g)], 10.0)
    same = F.normalize(torch.ones(2, 4), dim=-1)  # two identical pairs: each other's negative ...
    assert contrastive_loss(same, same, 10.0) > 0.69
    both = torch.ones(2, 2, dtype=torch.bool)  # ... unless they describe each other
    assert contrastive_loss(same, same, 10.0, both) == 0


def test_wrong_mask_never_fits_and_a_batch_differing_only_in_centre_has_them():
    centres = list(synth.CENTRE_COLOURS)
    metas = [flower("red", centres[i % 5], named=[("petal_colour",), ("petal_colour", "centre_colour")])
             for i in range(10)]
    picks = torch.tensor([[i % 2] for i in range(10)])  # half name the centre, half only "red"
    f = fits(metas, picks, [["a", "b"]] * 10)
    mask = wrong_mask(f, torch.randn(10, 16))
    assert mask.any(dim=1).all() and not (mask & f).any() and not mask.diagonal().any()
    near = torch.tensor([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]])  # free text: no paraphrase is a wrong one
    assert wrong_mask(torch.eye(3, dtype=torch.bool), near, max_cos=0.9).tolist() == [
        [False, False, True], [False, False, True], [True, True, False]]


def test_the_ranking_term_is_lower_when_the_own_caption_scores_highest():
    own_first = torch.tensor([[3.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    assert ranking_loss(own_first) < ranking_loss(own_first.flip(1))
    valid = torch.tensor([[True, False], [False, False]])  # row 1 has no wrong caption: no loss
    assert torch.isclose(ranking_loss(own_first, valid), F.cross_entropy(own_first[:1, :2], torch.tensor([0])) / 2)


@pytest.mark.parametrize("arch", ["gan-cls", "df-gan"])
def test_d_contrast_ranks_own_captions_and_reaches_d_image_features_and_text_path(train_urls, arch):
    """D's contrastive term, in either family: lower for aligned captions than shuffled ones once
    D has learnt the pairs; its gradient reaches D's image layers and its text path, not G."""
    from t2i.families.common import d_contrast

    cfg = tiny(arch=arch, d_contrast_coef=1.0, d_contrast_negatives=4)
    batch = next(batches(train_urls, 8))
    t = trainables(cfg, model_config(cfg, DATA.emb_dim, DATA.image_size))
    x = step_inputs(batch, cfg, torch.Generator().manual_seed(0), nets=t)
    assert x.wrong_mask is not None and x.wrong_mask.any(dim=1).all()
    opt = torch.optim.Adam(t.D.parameters(), lr=1e-3)
    for step in range(30):  # D learns this batch's pairs through the term alone
        loss = d_contrast(t.D, t.D.features(x.real), x.emb, x.wrong_mask, 4)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            first = loss.item()
            text = [p for n, p in t.D.named_parameters() if n.startswith(("proj", "head"))]
            image = [p for n, p in t.D.named_parameters() if n.startswith(("image_net", "blocks", "from_rgb"))]
            assert text and image and all(p.grad is not None and p.grad.abs().sum() > 0 for p in text + image)
            assert all(p.grad is None for p in t.G.parameters())
        opt.step()
    assert loss.item() < first
    feat = t.D.features(x.real).detach()
    stats = {k: v.clone() for k, v in t.D.state_dict().items() if "running" in k}
    d_contrast(t.D, feat, x.emb, x.wrong_mask, 4)  # the pairs leave D's running statistics be
    assert all(torch.equal(v, t.D.state_dict()[k]) for k, v in stats.items()) and (arch == "df-gan" or stats)
    shuffled = x.emb[torch.roll(torch.arange(8), 1)]
    with torch.no_grad():
        feat = t.D.features(x.real)
        assert d_contrast(t.D, feat, x.emb, x.wrong_mask, 4) < d_contrast(t.D, feat, shuffled, x.wrong_mask, 4)
    t = trainables(cfg, model_config(cfg, DATA.emb_dim, DATA.image_size))  # in a whole step, as d_contrast
    assert "d_contrast" in gan_step(t, x, cfg)


def test_the_grounding_puts_two_wordings_of_a_flower_closer_than_one_wording_of_two(make_embedded, tmp_path):
    from t2i.probes import load_probes

    emb = make_embedded(tmp_path / "d", 120, samples_per_shard=40, test_fraction=0.2)
    urls = sorted(str(p) for p in emb.glob("train-*.tar"))
    cfg = GroundParams(epochs=50, lr=3e-3, batch_size=16, dim=16, hidden=64, width=8, glimpses=2, threads=1)
    summary = train_grounding(urls, tmp_path / "g", cfg, progress=False)
    model = load_grounding(tmp_path / "g" / "ground.pt")
    pairs = load_probes(emb)["pairs"]["wording"]
    a = [(c, synth.parse(c)) for c in pairs["a"]]
    # One template, two flowers of other colours: the same words but the colours.
    others = [(i, j) for i, (_, (ti, wi)) in enumerate(a) for j, (_, (tj, wj)) in enumerate(a)
              if i < j and ti == tj and wi["p"] != wj["p"] and wi["c"] != wj["c"]]
    assert len(others) >= 5 and summary["loss"][-1] < summary["loss"][0]
    i, j = torch.tensor(others).T

    def gap(a, b):  # cosine of two wordings of one flower minus that of one wording of two flowers
        return F.cosine_similarity(a, b).mean() - F.cosine_similarity(a[i], a[j]).mean()

    sentence = gap(pairs["a_emb"].float(), pairs["b_emb"].float())  # bag of words: colour words weigh in already
    code = gap(model.text(pairs["a_emb"].float()), model.text(pairs["b_emb"].float()))
    assert code > 0.1 and code > sentence + 0.1, (code, sentence)


def test_the_stage_reports_checks_and_cosines(make_embedded, tmp_path):
    import json

    from t2i.data.loader import embedded_urls, to_float
    from t2i.probes import load_probes

    emb = make_embedded(tmp_path / "d", 40, samples_per_shard=12)
    test = list(batches(embedded_urls(emb, "test"), 64, drop_last=False))
    images = to_float(torch.cat([b["image"] for b in test]))
    train_grounding(embedded_urls(emb, "train"), tmp_path / "g", TINY_GROUND, progress=False,
                    test=(images, [k for b in test for k in b["key"]]), probes=load_probes(emb))
    m = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert {f"ground_check/{a}" for a in synth.ATTRIBUTES} <= m.keys()
    assert all(0 <= m[f"ground_check/{a}"] <= 1 for a in synth.ATTRIBUTES)
    for name in ("wording", "swapped", *synth.ATTRIBUTES):
        assert -1 <= m[f"cos/code/{name}"] <= 1 and -1 <= m[f"cos/sentence/{name}"] <= 1


def test_the_matching_term_is_lower_for_aligned_pairs_and_reaches_g_only(train_urls, grounding):
    from t2i.families.common import Loss, shared_g_terms

    cfg = tiny(match_coef=1.0)
    batch = next(batches(train_urls, 8))
    t = trainables(cfg, model_config(cfg, DATA.emb_dim, DATA.image_size), ground=grounding)
    x = step_inputs(batch, cfg, torch.Generator().manual_seed(0), nets=t)
    fake = t.G(x.z, x.emb)
    loss = shared_g_terms(cfg, x, {"fake": fake}, {}, Loss(fake.new_zeros(())), t.ground, None)
    loss.total.backward()
    assert "match" in loss.parts and all(p.grad is not None for p in t.G.parameters() if p.requires_grad)
    assert all(p.grad is None for p in grounding.parameters())
    real = grounding.image(x.real)  # real images against their captions, aligned and shuffled
    shuffled = torch.roll(torch.arange(8), 1)
    assert contrastive_loss(real, x.code, 10.0, x.agrees) < contrastive_loss(real, x.code[shuffled], 10.0)


def test_match_augment_scores_the_fakes_as_d_sees_them(train_urls, grounding):
    """train.match_augment: the matching term codes each fake after the step's train.augment
    transforms (the ``seen`` fakes), not the fake itself; off, the fake itself. It is refused,
    naming itself, where there is no augmentation or no matching loss to apply it to."""
    from t2i import T2IError
    from t2i.diffaugment import apply
    from t2i.families.common import Loss, shared_g_terms
    from t2i.params import load_params

    batch = next(batches(train_urls, 8))
    parts = {}
    for on in (False, True):
        cfg = tiny(match_coef=1.0, augment="translation,turn", match_augment=on)
        t = trainables(cfg, model_config(cfg, DATA.emb_dim, DATA.image_size), ground=grounding)
        x = step_inputs(batch, cfg, torch.Generator().manual_seed(0), nets=t)
        torch.manual_seed(0)
        fake = t.G(x.z, x.emb)
        seen = {"fake": x.seen_by_d(fake)}
        parts[on] = shared_g_terms(cfg, x, {"fake": fake}, {}, Loss(fake.new_zeros(())), t.ground, None,
                                   seen=seen).parts["match"]
        want = seen["fake"] if on else fake
        torch.testing.assert_close(parts[on], contrastive_loss(grounding.image(want), x.code,
                                                               1 / cfg.match_temperature, x.agrees))
        assert not torch.equal(apply(fake, x.d_draws), fake)  # the views differ from the fakes
    assert parts[True] != parts[False]
    for bad in (["train.match_augment=true", "train.augment="], ["train.match_augment=true", "train.match_coef=0"]):
        with pytest.raises(T2IError, match="train.match_augment: scores the fakes"):
            load_params(None, bad)


def test_levers_off_draw_and_record_as_before(train_urls):
    """With the levers off a step's inputs and the stored record are what they were before the
    levers existed (the plain run's files stay byte-identical); on, as by default, they are recorded."""
    cfg = tiny()
    assert not set(LEVERS) & set(cfg.recorded()) and set(LEVERS) <= set(tiny(**LEVERS).recorded())
    assert set(PLAIN) <= set(TrainParams().recorded())
    batch = next(batches(train_urls, 8))
    x = step_inputs(batch, cfg, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    idx = torch.rand(8, batch["emb"].shape[1], generator=g).argsort(dim=1)[:, :1]  # the draws of before
    emb = batch["emb"][torch.arange(8)[:, None], idx].mean(dim=1)
    assert torch.equal(x.emb, emb) and x.code is None and x.wrong_mask is None and x.agrees is None


def test_generator_pt_alone_draws_what_the_pipeline_drew(train_urls, grounding, data, tmp_path):
    """A generator trained on the grounded code carries its text head: loaded alone, it turns a
    sentence embedding into the same image as the trained G behind the grounding's head."""
    seen = {}
    training_loop(train_urls, tmp_path, tiny(**LEVERS), data=data, progress=False, ground=grounding,
                  on_step=lambda step, G, D: seen.update(G=G, D=D))
    G, config = load_generator(tmp_path / GENERATOR)
    z, emb = torch.randn(4, 8), torch.randn(4, 16)
    seen["G"].eval()
    with torch.no_grad():
        assert torch.equal(G(z, emb), seen["G"](z, grounding.text(emb)))
    assert config["grounding"] and config["text"] == "grounded" and config["model"]["emb_dim"] == 8
    assert G.cfg.emb_dim == 16 and G.cfg.z_dim == 8  # what a caption's encoder must give, and the noise
    D = load_discriminator(tmp_path / CHECKPOINT)  # with AC-GAN's heads
    assert set(D.net.attribute_heads.attributes) == set(synth.ATTRIBUTES)
    with torch.no_grad():
        img = torch.rand(4, 3, 32, 32) * 2 - 1
        # trained channels_last, loaded contiguous: the same numbers up to the kernels' summation order
        torch.testing.assert_close(D(img, emb), seen["D"].eval()(img, grounding.text(emb)), rtol=1e-5, atol=1e-6)


def test_resume_with_every_new_term_equals_uninterrupted(train_urls, grounding, data, tmp_path):
    from tests.test_train import same, weights

    def run(out, on_step=None):
        return training_loop(train_urls, out, tiny(**LEVERS, checkpoint_every=2), data=data,
                             progress=False, ground=grounding, on_step=on_step)

    run(tmp_path / "full")

    def crash(step, G, D):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", crash)
    assert run(tmp_path / "cut")["resumed"]
    assert (tmp_path / "full" / GENERATOR).read_bytes() == (tmp_path / "cut" / GENERATOR).read_bytes()
    full, cut = (torch.load(p / CHECKPOINT, weights_only=False) for p in (tmp_path / "full", tmp_path / "cut"))
    assert same(full["D"], cut["D"]) and same(weights(tmp_path / "full" / GENERATOR), weights(tmp_path / "cut" / GENERATOR))


def test_the_attribute_heads_learn_real_labels_and_ask_g_for_the_named_ones(train_urls, data):
    """AC-GAN's term: D classifies the real images' attributes; G is asked only for those its
    caption names; both enter the losses by weight, and the heads are D's (its optimiser's)."""
    cfg = tiny(ac_coef=1.0)
    batch = next(batches(train_urls, 8))
    t = trainables(cfg, model_config(cfg, DATA.emb_dim, DATA.image_size), attributes=data.attributes)
    assert t.heads is t.D.attribute_heads
    assert {id(p) for p in t.heads.parameters()} <= {id(p) for g in t.opt_d.param_groups for p in g["params"]}
    x = step_inputs(batch, cfg, torch.Generator().manual_seed(0), nets=t)
    assert (x.labels >= 0).all() and ((x.named_labels == x.labels) | (x.named_labels == -1)).all()
    assert (x.named_labels == -1).any()  # most captions leave something unnamed
    unlabelled = torch.full_like(x.labels, -1)  # a batch without labels: a zero term, every head in the graph
    zero = t.heads.loss(torch.zeros(8, next(iter(t.heads.heads.values())).in_features, 2, 2), unlabelled)
    assert zero.item() == 0 and zero.requires_grad
    for i, (k, values) in enumerate(t.heads.attributes.items()):  # the labels are the samples' values
        assert [values[v] for v in x.labels[:, i].tolist()] == [str(m["attributes"][k]) for m in batch["meta"]]
    before = [p.detach().clone() for p in t.heads.parameters()]
    out = gan_step(t, x, cfg)
    assert out["d_ac"] > 0 and out["g_ac"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, t.heads.parameters()))


def test_the_ground_head_is_ds_reads_the_frozen_grounding_and_teaches_g(train_urls, grounding, data, tmp_path):
    """train.ground_d_coef: a head on the grounding's cell features, held and updated with D,
    enters D's and G's losses by its weight; G's gradient passes through the frozen grounding,
    which never changes; a checkpoint's D loads back with it."""
    from t2i.families.common import GroundHead

    cfg = tiny(text="grounded", ground_d_coef=0.5)
    t = trainables(cfg, model_config(cfg, grounding.config["dim"], DATA.image_size), ground=grounding)
    head = t.D.ground_head
    assert isinstance(head, GroundHead)
    assert {id(p) for p in head.parameters()} <= {id(p) for g in t.opt_d.param_groups for p in g["params"]}
    kept = {k: v.clone() for k, v in grounding.state_dict().items()}
    before = [p.detach().clone() for p in head.parameters()]
    x = step_inputs(next(batches(train_urls, 8)), cfg, torch.Generator().manual_seed(0), nets=t)
    out = gan_step(t, x, cfg)
    assert out["d_ground"] > 0 and out["g_ground"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, head.parameters()))
    assert all(torch.equal(v, grounding.state_dict()[k]) for k, v in kept.items())
    from t2i.families.common import ground_d_loss

    t.G.zero_grad()
    ground_d_loss(t.D, grounding, t.G(x.z, x.emb), None, x.code).backward()
    assert all(p.grad is not None for p in t.G.parameters())
    training_loop(train_urls, tmp_path, tiny(text="grounded", ground_d_coef=0.5, epochs=1), data=data,
                  progress=False, ground=grounding)
    D = load_discriminator(tmp_path / CHECKPOINT)
    assert isinstance(D.net.ground_head, GroundHead)  # D behind the grounded text head (Coded)


def test_a_run_needing_the_grounding_says_so_without_it(train_urls, tmp_path):
    from t2i import T2IError

    with pytest.raises(T2IError, match="no attribute labels"):
        trainables(tiny(ac_coef=1.0), model_config(tiny(), DATA.emb_dim, DATA.image_size))
    with pytest.raises(T2IError, match="run the ground stage first"):
        training_loop(train_urls, tmp_path, tiny(match_coef=1.0), data=DATA, progress=False)
    with pytest.raises(T2IError, match="missing grounding"):
        load_grounding(tmp_path / "nope.pt")


def test_near_misses_miss_an_image_on_one_named_attribute_alone_spread_over_the_attributes(train_urls):
    from t2i.named import NearMisses

    bank = NearMisses.collect(batches(train_urls, 16, drop_last=False))
    metas = [m for b in batches(train_urls, 64, drop_last=False) for m in b["meta"]]
    assert len(bank.emb) == len(bank.named) == sum(len(m["named"]) for m in metas)
    x = bank.values(metas)
    idx = bank.draw(x, 50, torch.Generator().manual_seed(0))  # (N, 50)
    missed = (bank.named[idx] != -1) & (bank.named[idx] != x[:, None])  # (N, 50, A)
    assert (missed.sum(dim=-1) == 1).all()  # one attribute named with another value, the rest its own
    n = torch.arange(len(metas))
    assert not bank.fits(x, idx.flatten()).reshape(len(metas), len(metas), 50)[n, n].any()  # none describes its image
    share = missed.float().mean(dim=(0, 1))  # how often each attribute is the one missed
    assert (share > 0.1).all(), dict(zip(bank.vocab, share.tolist()))  # every attribute, not the colours alone


def test_the_extra_negatives_raise_the_loss_where_they_score_high_and_fitting_ones_are_left_out():
    a = F.normalize(torch.randn(4, 8), dim=1)
    b = F.normalize(a + 0.1 * torch.randn(4, 8), dim=1)
    base = contrastive_loss(a, b, 10.0)
    close = torch.cat([a, a])  # (8, D) negatives as close to each image as can be
    assert contrastive_loss(a, b, 10.0, extra=close) > base + 0.5
    fit = torch.cat([torch.eye(4, dtype=torch.bool)] * 2, dim=1)  # each image's own copies describe it ...
    far = contrastive_loss(a, b, 10.0, extra=close, extra_fits=fit)
    assert base < far < contrastive_loss(a, b, 10.0, extra=close)  # ... the others' copies still count


def test_near_miss_grounding_trains_and_a_source_without_named_attributes_is_refused(train_urls, tmp_path):
    from t2i import T2IError

    cfg = TINY_GROUND.model_copy(update={"near_miss": 2})
    summary = train_grounding(train_urls, tmp_path / "g", cfg, progress=False)
    off = train_grounding(train_urls, tmp_path / "off", TINY_GROUND, progress=False)
    assert summary["loss"] != off["loss"] and (tmp_path / "g" / "ground.pt").is_file()
    plain = [{**b, "meta": [{k: v for k, v in m.items() if k != "named"} for m in b["meta"]]}
             for b in batches(train_urls, 16, drop_last=False)]
    from t2i.named import NearMisses

    with pytest.raises(T2IError, match=r"ground.near_miss: sample \S+ does not say which attributes"):
        NearMisses.collect(plain)
