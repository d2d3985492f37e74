"""t2i.paths names the same artifacts that dvc.yaml declares, so a stage writes where DVC looks."""

from __future__ import annotations

from pathlib import Path

import yaml

from t2i.paths import Artifacts

REPO = Path(__file__).resolve().parent.parent


def declared(stage: dict) -> set[str]:
    """A stage's outs and metrics, as written in dvc.yaml (a dict entry is a path with options)."""
    entries = stage.get("outs", []) + stage.get("metrics", [])
    return {e if isinstance(e, str) else next(iter(e)) for e in entries}


def test_every_stage_output_is_named_by_the_paths_module():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    at = Artifacts(Path("data"), "${dataset}")
    expected = {
        "download": {at.raw}, "shard": {at.shards}, "embed": {at.embeddings},
        "ground": {at.grounding, at.grounding_metrics},
        "train": {at.models, at.train_logs / "plots", at.train_logs / "samples", at.checkpoints,
                  at.train_metrics}, "evaluator": {at.evaluator_dir},
        "evaluate": {at.eval / "grid.png", at.eval / "interpolation.png", at.metrics},
    }
    assert {name: declared(s) for name, s in stages.items()} == {
        name: {p.as_posix() for p in paths} for name, paths in expected.items()}


def test_files_sit_in_their_stage_folders():
    at = Artifacts(Path("/d"), "cub")
    assert at.generator == Path("/d/models/cub/generator.pt")
    assert at.evaluator == Path("/d/evaluator/cub/evaluator.pt")
    assert at.metrics == Path("/d/eval/cub/metrics.json")
    assert Artifacts(Path("/d"), "oxford-102").bench == at.bench  # one bench file for the machine
