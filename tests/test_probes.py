"""The probes in training (what D checks, what G draws): logged every epoch without changing the run."""

import hashlib

import torch

from stages.train import epoch_probe
from t2i import probes
from t2i.checkpoint import GENERATOR
from t2i.data.loader import batches, embedded_urls, to_float
from t2i.params import PLAIN, load_params
from t2i.train import DataSpec, training_loop

TINY = ["train.ngf=8", "train.ndf=8", "train.epochs=2", "train.batch_size=8", "train.z_dim=8", "train.proj_dim=8",
        "train.checkpoint_every=3", *(f"train.{k}={v}" for k, v in PLAIN.items())]  # plain: no grounding


def test_the_probes_are_logged_every_epoch_and_leave_the_weights_as_they_were(make_embedded, tmp_path):
    emb = make_embedded(tmp_path / "data", 40, samples_per_shard=12)
    found = probes.load_probes(emb)
    test = list(batches(embedded_urls(emb, "test"), 64, drop_last=False))
    images, keys = to_float(torch.cat([b["image"] for b in test])), [k for b in test for k in b["key"]]
    calls = []
    stage_probe = epoch_probe(emb, 64, 8)  # what the train stage logs, z_dim 8 as TINY's

    def probe(G, D):
        calls.append((G.training, D.training))
        out = stage_probe(G, D)
        drawn = {k.split("/")[1]: v for k, v in out.items() if k.startswith("silhouette/")}
        assert set(drawn) == {"count", "shape", "regularity", "petalled"} and all(0 <= v <= 1 for v in drawn.values())
        assert {k: v for k, v in out.items() if k.startswith("d_check/")} == {
            f"d_check/{k}": v for k, v in probes.caption_check(D, images, found, keys).items()}
        return out

    cfg = load_params(None, TINY).train
    spec = DataSpec(emb_dim=16, image_size=32, text_model="fake", num_samples=35)
    urls = embedded_urls(emb, "train")
    for name, p in (("with", probe), ("without", None)):
        training_loop(urls, tmp_path / name, cfg, data=spec, live_dir=tmp_path / name / "live", probe=p, progress=False)
    assert calls == [(True, True)] * 2  # once per epoch, G (no EMA here) and D handed over in training mode (and left so)
    same = [hashlib.sha256((tmp_path / n / f).read_bytes()).digest() for f in (GENERATOR, "checkpoint.pt")
            for n in ("with", "without")]
    assert same[0] == same[1] and same[2] == same[3]
    logged = (tmp_path / "with" / "live" / "plots" / "metrics" / "d_check" / "centre_colour.tsv").read_text().splitlines()
    assert logged[0].split("\t") == ["step", "centre_colour"] and len(logged) == 3  # a row per epoch
    assert not (tmp_path / "without" / "live" / "plots" / "metrics" / "d_check").exists()
    drawn = (tmp_path / "with" / "live" / "plots" / "metrics" / "silhouette" / "regularity.tsv").read_text().splitlines()
    assert len(drawn) == 3
