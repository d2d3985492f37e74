"""Inception FID and Inception Score through torch-fidelity (optional extra ``t2i[fidelity]``).

Skipped, with the reason recorded, when torch-fidelity cannot be imported, or when no
InceptionV3 weights file is given and downloading is off (``online=False``). On 64x64 synthetic
flowers these numbers say little (InceptionV3 was trained on ImageNet photos at 299x299); they
are here for comparison with the literature on real datasets, so metrics.json also records how
many images were scored, at which resolution, against which reference set (the real test split).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from t2i.data.loader import to_uint8
from t2i.metrics import EvalContext, MetricSkipped, register


class Uint8Images(Dataset):
    """(N, 3, S, S) float images in [-1, 1] served as uint8 (3, S, S), as torch-fidelity wants."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = to_uint8(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@register("inception")
def inception(ctx: EvalContext) -> dict[str, float]:
    try:
        import torch_fidelity
    except Exception as e:  # ImportError, or a torchvision that fails to load next to this torch
        raise MetricSkipped(f"torch-fidelity is not importable ({type(e).__name__}: {e})".splitlines()[0]) from None
    if ctx.inception_weights is None and not ctx.online:
        raise MetricSkipped("no inception_weights file given and online=False (cannot download InceptionV3)")
    n = len(ctx.fake)
    scores = torch_fidelity.calculate_metrics(
        input1=Uint8Images(ctx.fake),
        input2=Uint8Images(ctx.real),
        fid=True,
        isc=True,
        isc_splits=min(10, n),
        feature_extractor_weights_path=ctx.inception_weights,
        cuda=str(ctx.device).startswith("cuda"),
        batch_size=ctx.batch_size,
        rng_seed=ctx.seed,
        cache=False,
        save_cpu_ram=True,  # no DataLoader worker processes
        verbose=False,
    )
    return {
        "inception/fid": float(scores["frechet_inception_distance"]),
        "inception/is_mean": float(scores["inception_score_mean"]),
        "inception/is_std": float(scores["inception_score_std"]),
        "inception/n_fake": float(n),  # one image per test image, from one of its captions
        "inception/n_real": float(len(ctx.real)),  # the reference set: the real test-split images
        "inception/resolution": float(ctx.fake.shape[-1]),  # upsampled to 299 inside InceptionV3
    }
