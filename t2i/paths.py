"""Every artifact of a dataset, in one place: the stages, ``t2i generate``, ``t2i serve`` and the
scripts ask here instead of joining paths by hand. ``dvc.yaml``'s outs spell the same layout
(``tests/test_paths.py`` checks that they agree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifacts:
    """The artifacts of ``dataset`` under the data root ``data`` (``data/`` in a DVC workspace)."""

    data: Path
    dataset: str

    def _under(self, kind: str) -> Path:
        return Path(self.data) / kind / self.dataset

    @property
    def raw(self) -> Path:  # download: the raw layout every source adapter writes
        return self._under("raw")

    @property
    def shards(self) -> Path:  # shard: WebDataset tars + manifest
        return self._under("shards")

    @property
    def embeddings(self) -> Path:  # embed: the same tars with sentence embeddings beside each sample
        return self._under("embeddings")

    @property
    def grounding_dir(self) -> Path:  # ground: the text code grounded in images, and its report
        return self._under("grounding")

    @property
    def grounding(self) -> Path:
        return self.grounding_dir / "ground.pt"

    @property
    def grounding_metrics(self) -> Path:  # ground_check and the text cosines
        return self.grounding_dir / "metrics.json"

    @property
    def models(self) -> Path:  # train: the trained generator
        return self._under("models")

    @property
    def generator(self) -> Path:
        return self.models / "generator.pt"

    @property
    def checkpoints(self) -> Path:  # train: the resumable training state
        return self._under("checkpoints")

    @property
    def train_logs(self) -> Path:  # train: DVCLive metrics, plots and epoch sample grids
        return self._under("train")

    @property
    def train_metrics(self) -> Path:  # DVCLive's summary: the last logged value of every series
        return self.train_logs / "metrics.json"

    @property
    def evaluator_dir(self) -> Path:  # evaluator: the fixed scorer
        return self._under("evaluator")

    @property
    def evaluator(self) -> Path:
        return self.evaluator_dir / "evaluator.pt"

    @property
    def eval(self) -> Path:  # evaluate: metrics.json and the PNG grids
        return self._under("eval")

    @property
    def metrics(self) -> Path:
        return self.eval / "metrics.json"

    @property
    def bench(self) -> Path:  # t2i bench: this machine's speed figures (one file for every dataset)
        return Path(self.data) / "bench" / "results.json"
