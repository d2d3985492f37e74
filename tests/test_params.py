"""Typed params: defaults, the repo's params.yaml, DVC-style overrides, one-line errors."""

from pathlib import Path

import pytest
import yaml

from t2i import T2IError
from pydantic import BaseModel, ValidationError

from t2i.families import get_family
from t2i.params import DATASETS, FAMILY, PLAIN, Params, TrainParams, load_params

GAN_CLS = get_family("gan-cls").reads  # GAN-CLS's own keys

REPO_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def error_of(*args, **kw) -> str:
    with pytest.raises(T2IError) as err:
        load_params(*args, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_file_is_an_error_naming_it(tmp_path):
    assert error_of(tmp_path / "params.yml") == f"params file {tmp_path / 'params.yml'} not found"
    assert error_of(tmp_path) == f"params file {tmp_path} not found (a folder)"


@pytest.mark.parametrize("bad", ["synth.num_images=true", "train.epochs=false", "train.lr=true",
                                 "evaluate.max_images=true", "download.timeout=false"])
def test_a_bool_is_not_a_number(bad):
    key = bad.split("=")[0]
    assert error_of(None, [bad]).startswith(f"params: {key}: expected a number, got ")


@pytest.mark.parametrize("bad", ["train.lr=inf", "train.lr=.nan", "train.beta1=-inf", "download.timeout=inf",
                                 "train.int_coef=.inf", "synth.test_fraction=nan"])
def test_non_finite_numbers_are_rejected(bad):
    assert error_of(None, [bad]).startswith(f"params: {bad.split('=')[0]}: ")


def test_defaults_without_a_file():
    p = load_params(None)
    assert p == Params()
    assert p.dataset == "synthetic-flowers"
    assert p.synth.num_images == 3000 and p.synth.test_fraction == 0.2
    assert p.shard.image_format == "png" and p.embed.model == "all-MiniLM-L6-v2"


def test_empty_file_gives_defaults(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("# nothing yet\n")
    assert load_params(f) == Params()


def test_repo_params_yaml_validates():
    assert REPO_PARAMS.is_file()
    p = load_params(REPO_PARAMS)
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    dumped = p.model_dump()
    assert dumped["dataset"] == raw["dataset"]
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if section == "train" and key in FAMILY[p.train.arch] and value is None:  # the family's own
                    value = FAMILY[p.train.arch][key]
                assert dumped[section][key] == value, f"{section}.{key}"


def _leaves(tree: dict, prefix: str = "") -> dict:
    """{"train.df_gan.ngf": 16, ...}: every leaf of a nested mapping, by dotted key."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v and k != "md5":  # download.md5 is a value (a mapping)
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_params_yaml_is_the_built_in_defaults_key_by_key():
    """One source of defaults: params.yaml names every key with exactly the pydantic default, so
    deleting a line from it changes nothing, and TrainParams() trains what dvc repro trains."""
    in_file = _leaves(yaml.safe_load(REPO_PARAMS.read_text()))
    defaults = _leaves(Params().model_dump())
    for k in FAMILY["gan-cls"]:  # null in params.yaml: the family's own
        defaults[f"train.{k}"] = None
    assert in_file.keys() == defaults.keys(), f"keys only in params.yaml: {in_file.keys() - defaults.keys()}, " \
        f"only in the models: {defaults.keys() - in_file.keys()}"
    differ = {k: (in_file[k], defaults[k]) for k in in_file if in_file[k] != defaults[k]}
    assert not differ, f"params.yaml -> built-in default: {differ}"
    assert load_params(REPO_PARAMS) == Params()


def test_epochs_batch_size_and_form_levers_null_mean_the_familys_own():
    assert FAMILY["gan-cls"].keys() == FAMILY["df-gan"].keys() == {"epochs", "batch_size", "d_head", "ema", "augment"}
    for key in FAMILY["gan-cls"]:
        assert getattr(TrainParams(), key) == getattr(TrainParams(**{key: None}), key) == FAMILY["gan-cls"][key]
        assert getattr(TrainParams(arch="df-gan"), key) == FAMILY["df-gan"][key] != FAMILY["gan-cls"][key]
    assert TrainParams(arch="df-gan", batch_size=16).batch_size == 16  # a number given is kept
    assert TrainParams(arch="df-gan", epochs=3).epochs == 3
    with pytest.raises(T2IError, match="train.arch"):
        load_params(None, ["train.arch=stylegan"])


def test_with_arch_gives_the_new_familys_own_levers_and_keeps_the_rest():
    """Switching a config's family takes that family's FAMILY values (a model_copy would keep
    GAN-CLS's levers and batch for DF-GAN), the other keys and the update given."""
    cfg = TrainParams(ngf=8, seed=3).with_arch("df-gan", threads=1)
    assert {k: getattr(cfg, k) for k in FAMILY["df-gan"]} == FAMILY["df-gan"]
    assert (cfg.arch, cfg.ngf, cfg.seed, cfg.threads) == ("df-gan", 8, 3, 1)
    assert TrainParams(arch="df-gan").with_arch("gan-cls") == TrainParams()
    with pytest.raises(T2IError, match="train.ground_d_coef: its head is called outside"):
        load_params(None, ["train.ground_d_coef=1", "train.nproc_per_node=2"])


def test_a_gan_cls_record_is_what_it_was_before_families():
    """generator.pt of a plain GAN-CLS run stores exactly the keys it stored before train.arch and
    the levers existed, so its files stay byte-identical; the default adds its levers; a DF-GAN
    record holds only what it reads."""
    before = ["epochs", "batch_size", "lr", "beta1", "beta2", "z_dim", "proj_dim", "ngf", "ndf", "cls", "int_coef",
              "int_beta", "l1_coef", "fm_coef", "label_smoothing", "ca", "kl_coef", "ms_coef", "captions_per_step",
              "shuffle_buffer", "seed", "device", "precision", "channels_last", "compile", "threads", "workers",
              "log_every"]
    assert list(TrainParams(**PLAIN).recorded()) == before
    assert set(TrainParams().recorded()) == set(before) | set(PLAIN)
    df = TrainParams(arch="df-gan").recorded()
    assert df["arch"] == "df-gan" and df["df_gan"]["magp_power"] == 6.0 and not set(GAN_CLS) & set(df)


def test_partial_file_keeps_other_defaults(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("synth:\n  num_images: 12\n")
    p = load_params(f)
    assert p.synth.num_images == 12
    assert p.synth.render_size == Params().synth.render_size
    assert p.shard == Params().shard


def test_override_string_float_is_coerced(tmp_path):
    p = load_params(None, ["synth.test_fraction=1e-01"])
    assert isinstance(p.synth.test_fraction, float) and p.synth.test_fraction == pytest.approx(0.1)


def test_string_float_in_file_is_coerced(tmp_path):
    """``dvc exp run -S`` writes ``1e-01`` into params.yaml, which PyYAML reads as a string."""
    f = tmp_path / "params.yaml"
    f.write_text("synth:\n  test_fraction: 1e-01\n")
    assert yaml.safe_load(f.read_text())["synth"]["test_fraction"] == "1e-01"
    assert load_params(f).synth.test_fraction == pytest.approx(0.1)


def test_overrides_win_over_file_and_apply_in_order(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("shard:\n  image_size: 64\n  image_format: png\n")
    p = load_params(f, ["shard.image_size=32", "shard.image_format=jpg", "shard.image_size=128",
                        "embed.model=my-model"])
    assert p.shard.image_size == 128 and p.shard.image_format == "jpg"
    assert p.embed.model == "my-model"


def test_unknown_key_names_it(tmp_path):
    msg = error_of(None, ["synth.foo=1"])
    assert "synth.foo" in msg and "unknown key" in msg


def test_unknown_key_in_file_names_it(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("shard:\n  imagesize: 32\n")
    msg = error_of(f)
    assert "shard.imagesize" in msg and str(f) in msg


def test_unknown_section_names_it(tmp_path):
    assert "trian" in error_of(None, ["trian.epochs=3"])


@pytest.mark.parametrize("override, key", [
    ("synth.num_images=lots", "synth.num_images"),
    ("synth.seed=1.5", "synth.seed"),
    ("shard.image_format=gif", "shard.image_format"),
    ("embed.device=tpu", "embed.device"),
    ("synth.test_fraction=abc", "synth.test_fraction"),
])
def test_wrong_type_names_key(tmp_path, override, key):
    msg = error_of(None, [override])
    assert key in msg
    assert override.split("=")[1] in msg  # and the bad value


@pytest.mark.parametrize("override, key", [
    ("synth.test_fraction=1.5", "synth.test_fraction"),
    ("synth.test_fraction=0", "synth.test_fraction"),
    ("synth.num_images=0", "synth.num_images"),
    ("shard.image_size=4", "shard.image_size"),
    ("shard.image_size=48", "shard.image_size"),  # not a size the models are built for
    ("shard.jpeg_quality=101", "shard.jpeg_quality"),
    ("embed.model=", "embed.model"),
])
def test_out_of_range_names_key(tmp_path, override, key):
    assert key in error_of(None, [override])


def test_unknown_dataset_names_it(tmp_path):
    msg = error_of(None, ["dataset=oxford-103"])
    assert "oxford-103" in msg and "dataset" in msg
    assert all(d in msg for d in DATASETS)  # and says what is known


@pytest.mark.parametrize("bad", ["synth.num_images", "=3", "synth"])
def test_malformed_override(tmp_path, bad):
    assert bad in error_of(None, [bad])


def test_override_into_a_value_is_an_error(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("dataset: synthetic-flowers\n")
    assert "dataset" in error_of(f, ["dataset.x=1"])


@pytest.mark.parametrize("text", ["synth: [1, 2\n", "- just\n- a list\n"])
def test_bad_yaml_is_one_line(tmp_path, text):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    assert str(f) in error_of(f)


def test_params_are_frozen():
    p = Params()
    with pytest.raises(ValidationError, match="frozen"):
        p.synth.num_images = 5  # type: ignore[misc]


def test_real_datasets_are_known():
    assert {"cub", "oxford-102", "hf", "folder"} <= set(DATASETS)
    from t2i.data.sources import ADAPTERS

    assert tuple(ADAPTERS) == DATASETS  # every dataset has an adapter, and only those


def test_md5_overrides(tmp_path):
    p = load_params(None, ["download.md5={a.tgz: 0123456789ABCDEF0123456789abcdef, b.mat: 00012345678901234567890123456789}"])
    # upper case folded; an all-digit md5 (which YAML reads as an integer) keeps its leading zeros
    assert p.download.md5 == {"a.tgz": "0123456789abcdef0123456789abcdef", "b.mat": "00012345678901234567890123456789"}
    msg = error_of(None, ["download.md5={a.tgz: not-an-md5}"])
    assert "download.md5" in msg and "a.tgz" in msg and "not-an-md5" in msg


@pytest.mark.parametrize("override, key", [
    ("download.mirror=ftp://example.org/data", "download.mirror"),
    ("download.max_missing=2", "download.max_missing"),
    ("download.retries=-1", "download.retries"),
    ("shard.crop=tight", "shard.crop"),
])
def test_download_params_name_key(tmp_path, override, key):
    msg = error_of(None, [override])
    assert key in msg and override.split("=", 1)[1] in msg


@pytest.mark.parametrize("dataset, key", [("hf", "hf.name"), ("folder", "folder.path")])
def test_generic_sources_need_their_location(tmp_path, dataset, key):
    msg = error_of(None, [f"dataset={dataset}"])
    assert key in msg and "required" in msg and not msg.split(": ", 1)[1].startswith(":")
    assert load_params(None, [f"dataset={dataset}", f"{key}=/somewhere"]).dataset == dataset


def numeric_keys() -> list[tuple[str, type]]:
    """Every int or float param, as (dotted key, type)."""
    from typing import get_args

    out = []
    for section, field in Params.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for key, f in model.model_fields.items():
            kinds = {f.annotation, *get_args(f.annotation)} & {int, float}
            if kinds:
                out.append((f"{section}.{key}", float if float in kinds else int))
    return out


def test_every_numeric_param_refuses_bools_and_non_finite_values():
    keys = numeric_keys()
    assert len(keys) > 30 and ("train.lr", float) in keys and ("synth.num_images", int) in keys
    for key, kind in keys:
        assert error_of(None, [f"{key}=true"]).startswith(f"params: {key}: expected a number"), key
        if kind is float:
            assert error_of(None, [f"{key}=inf"]).startswith(f"params: {key}: "), key


def test_the_params_page_is_generated_from_the_models():
    """docs/params.md is what scripts/params_doc.py writes from t2i/params.py and params.yaml."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(REPO_PARAMS.parent / "scripts" / "params_doc.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
