"""``t2i evaluate``: score the generator on test captions -> data/eval/<dataset>/metrics.json + PNGs."""

from __future__ import annotations

import json
from pathlib import Path

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.paths import Artifacts


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Attribute accuracy, R-precision, Frechet distances; sample grid and interpolation strip."""
    p = params(params_file, overrides)
    cfg = p.evaluate
    from t2i import metrics
    from t2i.data.loader import embedded_urls
    from t2i.evaluate import evaluate
    from t2i.evaluator import load_evaluator
    from t2i.device import pick_device
    from t2i import probes
    from t2i.checkpoint import CHECKPOINT, load_discriminator, load_generator

    metrics.get(cfg.metrics)  # unknown names fail before any work
    device = pick_device(cfg.device)
    at = Artifacts(data, p.dataset)
    generator, config = load_generator(at.generator, device)
    evaluator = load_evaluator(at.evaluator, device)
    out = at.eval
    D = load_discriminator(at.checkpoints / CHECKPOINT, device) if "d_check" in cfg.metrics else None
    oracle = config.get("text") == "oracle"
    if oracle:  # G and D see captions as the oracle codes them (t2i/oracle.py)
        from t2i.ground import Coded
        from t2i.oracle import head_for

        head = head_for(at.embeddings, config["attributes"]).to(device)
        generator, D = Coded(generator, head), D if D is None else Coded(D, head)
    encode = None
    if "phrasing" in cfg.metrics and not oracle:  # captions of its own (new wording, unknown to an oracle)
        from t2i.text import TextEncoder

        encode = TextEncoder(config["text_model"], device, precision=p.embed.precision).encode
    with Timer() as t:
        result = evaluate(generator, evaluator, embedded_urls(at.embeddings, "test"), out, cfg,
                          device=device, encode=encode, probes=probes.load_probes(at.embeddings), discriminator=D,
                          strip=not oracle)
    headline = {k: round(v, 3) for k, v in result.items() if isinstance(v, float) and "/" in k and k.endswith("fake")}
    done("evaluate", t.seconds, f"{json.dumps(headline)} -> {at.metrics}")
