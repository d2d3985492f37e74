"""train.text: oracle: G and D conditioned on the one-hot attributes each caption names."""

from __future__ import annotations

import pytest
import torch

from t2i import T2IError
from t2i.checkpoint import GENERATOR, load_generator
from t2i.data.loader import batches, embedded_urls
from t2i.ground import Coded
from t2i.named import discover_attributes
from t2i.oracle import OracleHead, caption_codes, code, code_size, codes, head_for, template_values
from t2i.params import TrainParams
from t2i.train import DataSpec, training_loop

from tests.test_train import DATA, TINY

VOCAB = {"centre_colour": ["orange", "white"], "petal_count": ["3", "5"], "petal_shape": ["pointed", "round"]}


def test_a_code_is_the_one_hot_value_of_each_attribute_a_caption_names():
    assert code({"petal_count": "5"}, VOCAB).tolist() == [0, 0, 0, 1, 0, 0]
    assert code({"centre_colour": "white", "petal_shape": "pointed"}, VOCAB).tolist() == [0, 1, 0, 0, 1, 0]
    meta = {"attributes": {"centre_colour": "orange", "petal_count": 3, "petal_shape": "round"},
            "named": [["petal_count"], ["centre_colour", "petal_shape"]]}
    every = caption_codes([meta], VOCAB)
    assert every.tolist() == [[[0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 1]]] and code_size(VOCAB) == 6
    assert codes([meta], torch.tensor([[0, 1]]), VOCAB).tolist() == [[0.5, 0, 0.5, 0, 0, 0.5]]


def test_template_values_read_training_and_probe_captions():
    assert template_values("this flower has five purple petals and an orange centre") == {
        "petal_count": "5", "petal_colour": "purple", "centre_colour": "orange"}
    assert template_values("a flower with sharp red petals and a green stamen")["petal_shape"] == "pointed"
    assert template_values("this flower has 7 petals that are red and oval")["petal_count"] == "7"
    with pytest.raises(ValueError):
        template_values("a picture of a bird")


def test_the_oracle_errors_clearly_without_attribute_labels(train_urls, tmp_path):
    with pytest.raises(T2IError, match="train.text: oracle: this dataset's samples have no attribute labels"):
        training_loop(train_urls, tmp_path, TrainParams(**{**TINY, "text": "oracle"}), data=DATA, progress=False)
    with pytest.raises(T2IError, match="which attributes each caption names"):
        caption_codes([{"attributes": {"petal_count": 3}}], VOCAB)


def test_an_oracle_run_trains_on_the_codes_and_is_scored_through_its_table(make_embedded, tmp_path):
    emb = make_embedded(tmp_path / "data", 40)
    train = [m for b in batches(embedded_urls(emb, "train"), 64, drop_last=False) for m in b["meta"]]
    attrs = discover_attributes(train)
    head = head_for(emb, attrs)
    data = DataSpec(emb_dim=16, image_size=32, text_model="fake", num_samples=len(train), attributes=attrs)
    test = next(batches(embedded_urls(emb, "test"), 4, drop_last=False))
    training_loop(embedded_urls(emb, "train"), tmp_path / "out", TrainParams(**{**TINY, "text": "oracle", "epochs": 1}),
                  data=data, oracle=head, sample_emb=test["emb"][:, 0], sample_captions=[c[0] for c in test["captions"]],
                  live_dir=tmp_path / "live", progress=False)
    G, config = load_generator(tmp_path / "out" / GENERATOR)
    assert config["text"] == "oracle" and config["attributes"] == attrs and G.cfg.emb_dim == code_size(attrs)
    assert (tmp_path / "live" / "samples" / "epoch_001.png").is_file()  # the grid, through the table
    # the table gives each test caption the code of what it names, and the probes' altered captions theirs
    torch.testing.assert_close(head(test["emb"][:, 0].float()), caption_codes(test["meta"], attrs)[:, 0])
    from t2i.probes import load_probes

    rows = load_probes(emb)["d_check"]["petal_colour"]
    alt = head(rows["altered_emb"][:1].float())[0]
    assert alt.tolist() == code(template_values(rows["altered"][0]), attrs).tolist()
    assert Coded(G, head)(torch.randn(4, TINY["z_dim"]), test["emb"][:, 0].float()).shape == (4, 3, 32, 32)
    with pytest.raises(T2IError, match="knows only captions whose attributes are known"):
        head(torch.randn(1, 16))
    # scored as the evaluate stage scores it: through the table, every probe included, no strip
    from t2i.checkpoint import CHECKPOINT, load_discriminator
    from t2i.evaluate import evaluate
    from t2i.evaluator import Evaluator
    from t2i.params import EvaluateParams

    evaluator = Evaluator(attrs, emb_dim=16, image_size=32, feat_dim=32).eval()
    D = Coded(load_discriminator(tmp_path / "out" / CHECKPOINT), head)
    out = evaluate(Coded(G, head), evaluator, embedded_urls(emb, "test"), tmp_path / "eval",
                   EvaluateParams(metrics=["attribute_accuracy", "g_check", "d_check"], batch_size=8),
                   probes=load_probes(emb), discriminator=D, strip=False)
    assert 0 <= out["attr/petal_count/fake"] <= 1 and "g_check/seen/petal_count" in out and "d_check/petal_count" in out
    assert (tmp_path / "eval" / "grid.png").is_file() and not (tmp_path / "eval" / "interpolation.png").exists()


def test_an_oracle_generator_refuses_free_captions(make_embedded, tmp_path):
    from t2i.generate import load_with_text

    emb = make_embedded(tmp_path / "data", 40)
    train = [m for b in batches(embedded_urls(emb, "train"), 64, drop_last=False) for m in b["meta"]]
    data = DataSpec(emb_dim=16, image_size=32, text_model="fake", attributes=discover_attributes(train))
    training_loop(embedded_urls(emb, "train"), tmp_path, TrainParams(**{**TINY, "text": "oracle", "epochs": 1}),
                  data=data, progress=False)
    with pytest.raises(T2IError, match="trained with train.text: oracle"):
        load_with_text(tmp_path / GENERATOR, "cpu")


def test_an_empty_table_refuses_everything():
    with pytest.raises(T2IError):
        OracleHead(VOCAB).add(torch.randn(2, 4), torch.zeros(2, 6))(torch.randn(1, 4))
