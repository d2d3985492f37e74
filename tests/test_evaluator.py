"""The evaluator network: shapes, training on tiny shards, determinism, save/load."""

import math

import pytest
import torch

from t2i import T2IError
from t2i.params import EvaluatorParams, load_params
from t2i.data.loader import batches, embedded_urls
from t2i.data.loader import to_float
from t2i.evaluator import (
    GLIMPSES,
    PATHS,
    Evaluator,
    load_evaluator,
    recolour,
    restart_stuck_glimpses,
    train_evaluator,
)
from t2i.augment import shift_turn_flip
from t2i.named import attribute_labels, discover_attributes

DIM = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_embedded):
    """96 synthetic flowers at 32x32, embedded: the embedded folder."""
    return make_embedded(tmp_path_factory.mktemp("evaluator"), 96, samples_per_shard=32, dim=DIM)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "evaluator.pt"
    summary = train_evaluator(embedded_urls(tiny, "train"), out, EvaluatorParams(epochs=20, batch_size=16, lr=3e-3),
                              progress=False)
    return out, summary


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes(size: int) -> None:
    ev = Evaluator({"colour": ["a", "b", "c"], "count": ["3", "4"]}, emb_dim=DIM, image_size=size, feat_dim=64)
    out = ev(torch.rand(2, 3, size, size) * 2 - 1)
    assert out["logits"]["colour"].shape == (2, 3) and out["logits"]["count"].shape == (2, 2)
    assert out["features"].shape == (2, 64)
    assert out["proj"].shape == (2, DIM)
    assert torch.allclose(out["proj"].norm(dim=1), torch.ones(2))


def test_wrong_image_size_is_an_error() -> None:
    ev = Evaluator({"colour": ["a", "b"]}, emb_dim=DIM, image_size=32)
    with pytest.raises(T2IError, match="32x32"):
        ev(torch.zeros(1, 3, 64, 64))
    with pytest.raises(T2IError, match="48"):
        Evaluator({"colour": ["a", "b"]}, emb_dim=DIM, image_size=48)


def test_recolour_changes_hue_keeps_grey_level() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8) - 0.5  # colours inside [-1, 1] after any turn: nothing clamped
    y = recolour(x, gen)
    assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-5)  # the grey axis is kept
    assert torch.allclose(y.norm(dim=1), x.norm(dim=1), atol=1e-5)  # a rotation or mirror
    moved = (y - x).abs().amax(dim=(1, 2, 3))
    assert (moved > 0.1).float().mean() > 0.8  # almost every image gets other hues
    grey = torch.full((2, 3, 4, 4), 0.3)
    assert torch.allclose(recolour(grey, gen), grey, atol=1e-6)  # greys have no hue to turn
    assert torch.equal(recolour(x, torch.Generator().manual_seed(1)), recolour(x, torch.Generator().manual_seed(1)))


def test_shift_turn_flip_only_moves_pixels() -> None:
    x = torch.rand(32, 3, 8, 8)
    y = shift_turn_flip(x, torch.Generator().manual_seed(0), max_shift=0)
    assert torch.equal(y.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)  # same pixels
    assert sum(not torch.equal(a, b) for a, b in zip(x, y)) > 16  # most turned or flipped


def test_where_trunk_alone_sees_the_recoloured_images() -> None:
    torch.manual_seed(0)
    ev = Evaluator({"colour": ["a", "b", "c"]}, emb_dim=DIM, image_size=32).eval()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        pooled, local, glob, _ = ev.heads(x)
        pooled2, local2, glob2, _ = ev.heads(x, recolour(x, torch.Generator().manual_seed(0)))
    assert torch.equal(pooled, pooled2) and torch.equal(glob["colour"], glob2["colour"])
    assert not torch.allclose(local["colour"], local2["colour"])  # where to look moved


def test_attention_entropy_and_glimpse_paths() -> None:
    torch.manual_seed(0)
    ev = Evaluator({"colour": ["a", "b", "c"]}, emb_dim=DIM, image_size=32).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    cells = (32 // 2) ** 2  # the colour grid is half the image size
    with torch.no_grad():
        attend = ev.attend["colour"]
        attend.weight.zero_(), attend.bias.zero_()
        _, _, _, uniform = ev.heads(x)
        assert uniform.item() == pytest.approx(math.log(cells), rel=1e-5)  # flat maps: maximal entropy
        attend.weight.normal_(std=5.0)
        pooled, local, glob, peaked = ev.heads(x)
        assert peaked < uniform - 0.5
        assert local["colour"].shape == (2, GLIMPSES, 3)
        for g in range(GLIMPSES):  # forward reads the glimpse that paths names
            ev.paths = {"colour": f"local{g}"}
            assert torch.equal(ev(x)["logits"]["colour"], local["colour"][:, g])
        ev.paths = {"colour": "global"}
        assert torch.equal(ev(x)["logits"]["colour"], glob["colour"])
    with pytest.raises(T2IError, match="local9"):
        Evaluator({"colour": ["a", "b"]}, emb_dim=DIM, image_size=32, paths={"colour": "local9"})


def test_restart_stuck_glimpses_redraws_only_the_trailing_spares() -> None:
    torch.manual_seed(0)
    ev = Evaluator({"colour": ["a", "b", "c"], "count": ["3", "4"]}, emb_dim=DIM, image_size=32)
    opt = torch.optim.Adam(ev.parameters())
    _, local, glob, _ = ev.heads(torch.rand(4, 3, 32, 32) * 2 - 1)
    (sum(v.sum() for v in local.values()) + sum(v.sum() for v in glob.values())).backward()
    opt.step()
    before = {n: p.detach().clone() for n, p in ev.named_parameters()}
    acc = {"colour": [1.0, 0.30, 0.95, 0.20],  # glimpse 1 fits: keep all
           "count": [0.9, 0.25, 0.40, 0.30]}  # none fits: all but the best (local1) start afresh
    assert GLIMPSES == 3
    restarted = restart_stuck_glimpses(ev, opt, acc, torch.Generator().manual_seed(0))
    assert restarted == [("colour", 0), ("colour", 2), ("count", 0), ("count", 2)]
    assert restart_stuck_glimpses(ev, opt, {"colour": [1.0, 0.95, 0.95, 0.95], "count": [0.5, 0.45, 0.5, 0.5]},
                                  torch.Generator()) == []  # every glimpse within the gap
    for k, n in (("colour", 3), ("count", 2)):
        attend, scores = ev.attend[k].weight, ev.local_scores[k].weight
        moved = (attend != before[f"attend.{k}.weight"]).flatten(1).any(1).tolist()
        assert moved == [True, False, True], (k, moved)  # the map of every restarted glimpse, only those
        moved = (scores != before[f"local_scores.{k}.weight"]).flatten(1).any(1).view(GLIMPSES, n).all(1).tolist()
        assert moved == [True, False, True], (k, moved)  # and its scores
        for param in (ev.attend[k].weight, ev.local_scores[k].bias):
            state = opt.state[param]
            rows = [slice(0, 1), slice(2, 3)] if param.dim() == 4 else [slice(0, n), slice(2 * n, 3 * n)]
            for r in rows:  # Adam forgets the old glimpse's moments
                assert not state["exp_avg"][r].any() and not state["exp_avg_sq"][r].any()
            assert state["exp_avg_sq"][slice(1, 2) if param.dim() == 4 else slice(n, 2 * n)].any()
        assert attend[[0, 2]].abs().max() <= 1 / math.sqrt(64)  # drawn like PyTorch's own init
    for name in before:  # nothing else moved: the trunks, the global heads, the projection
        if not name.startswith(("attend.", "local_scores.")):
            assert torch.equal(before[name], dict(ev.named_parameters())[name]), name


def test_vocabulary_from_meta() -> None:
    metas = [{"attributes": {"petal_count": c, "colour": col}} for c, col in [(10, "red"), (3, "blue"), (4, "red")]]
    vocab = discover_attributes(metas)
    assert vocab == {"colour": ["blue", "red"], "petal_count": ["3", "4", "10"]}
    labels = attribute_labels(metas + [{"attributes": {"colour": "green"}}], vocab)
    assert labels["petal_count"].tolist() == [2, 0, 1, -1]
    assert labels["colour"].tolist() == [1, 0, 1, -1]
    # Without attributes: one head over the class ids seen.
    assert discover_attributes([{"class_id": 7}, {"class_id": 2}, {}]) == {"class": ["2", "7"]}


def train_accuracy(path, folder) -> tuple[dict, dict]:
    """Accuracy of a saved evaluator per attribute on the training split, and majority baselines."""
    ev = load_evaluator(path)
    b = next(batches(embedded_urls(folder, "train"), 1000, drop_last=False))
    labels = attribute_labels(b["meta"], ev.attributes)
    with torch.no_grad():
        logits = ev(to_float(b["image"]))["logits"]
    acc = {k: (logits[k].argmax(1) == y).float().mean().item() for k, y in labels.items()}
    chance = {k: torch.bincount(y).max().item() / len(y) for k, y in labels.items()}
    return acc, chance


@pytest.mark.slow
def test_training_beats_chance_on_train_attributes(trained, tiny) -> None:
    path, summary = trained
    assert summary["n_train"] > 50 and set(summary["attributes"]) == {
        "petal_colour", "centre_colour", "petal_count", "petal_shape"}
    acc, chance = train_accuracy(path, tiny)
    assert acc["petal_colour"] > chance["petal_colour"] + 0.5, (acc, chance)
    assert acc["centre_colour"] > chance["centre_colour"] + 0.2, (acc, chance)
    assert sum(acc.values()) > sum(chance.values()) + 1.0, (acc, chance)
    for k, a in summary["train_acc"].items():  # the best fitting glimpse, or the global head
        assert list(a) == list(PATHS)
        assert summary["paths"][k] in ("global", max(PATHS[1:], key=a.get)), (k, a, summary["paths"])


@pytest.mark.slow
def test_training_is_deterministic(trained, tiny, tmp_path) -> None:
    path, _ = trained
    again = tmp_path / "again.pt"
    train_evaluator(embedded_urls(tiny, "train"), again, EvaluatorParams(epochs=20, batch_size=16, lr=3e-3),
                    progress=False)
    assert again.read_bytes() == path.read_bytes()  # byte-identical files: stable DVC hashes
    a, b = torch.load(path, weights_only=True), torch.load(again, weights_only=True)
    assert a["config"] == b["config"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    other = tmp_path / "other.pt"
    train_evaluator(embedded_urls(tiny, "train"), other, EvaluatorParams(epochs=1, batch_size=16, seed=1), progress=False)
    c = torch.load(other, weights_only=True)
    assert not torch.equal(a["state_dict"]["proj.weight"], c["state_dict"]["proj.weight"])


def test_save_load_roundtrip(trained) -> None:
    path, _ = trained
    ev = load_evaluator(path)
    assert not ev.training
    saved = torch.load(path, weights_only=True)
    assert saved["config"] == ev.config and saved["config"]["image_size"] == 32
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    again = load_evaluator(path)
    with torch.no_grad():
        assert torch.equal(ev(x)["proj"], again(x)["proj"])


def test_missing_and_corrupt_checkpoints(tmp_path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(T2IError, match="nope.pt"):
        load_evaluator(missing)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(T2IError, match="corrupt evaluator checkpoint .*bad.pt"):
        load_evaluator(bad)


def test_bad_training_arguments(tiny, tmp_path) -> None:
    with pytest.raises(T2IError, match="evaluator.epochs"):  # ranges are checked once, in params.py
        load_params(None, ["evaluator.epochs=0"])
    with pytest.raises(T2IError, match="no training shards"):
        train_evaluator([], tmp_path / "e.pt")
    assert not (tmp_path / "e.pt").exists()
