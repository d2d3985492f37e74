"""The oracle condition (``train.text: oracle``): G and D are conditioned on the one-hot values of
the attributes each caption names, instead of a text code. It is the upper bound of
conditioning: a recipe that cannot draw what the oracle asks for is limited by the GAN, not by
the text. It needs samples that say which attributes each caption names (``meta["named"]``:
synthetic flowers).

A caption's code is the concatenation, over the attributes (in the vocabulary's order), of a
one-hot of the value it names, zeros for one it does not name. Training reads the codes from the
samples (``codes``). Everything that calls G or D with caption embeddings (the per-epoch grid,
D's probe, the evaluate stage) does so through ``OracleHead``, a table from the embedding of
every caption whose attributes are known (the split's own, the probes') to its code, behind
``t2i.ground.Coded`` as the grounded code's head is. A caption outside the table is an error.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2i import T2IError
from t2i.named import attribute_values, knows_named


def code_size(attributes: dict[str, list[str]]) -> int:
    """The length of a code: every value of every attribute."""
    return sum(len(v) for v in attributes.values())


def code(values: dict[str, str], attributes: dict[str, list[str]]) -> torch.Tensor:
    """(code_size,) the code of a caption naming ``values`` ({attribute: value}; others not named)."""
    parts = []
    for attr, vocab in attributes.items():
        part = torch.zeros(len(vocab))
        if attr in values and str(values[attr]) in vocab:
            part[vocab.index(str(values[attr]))] = 1.0
        parts.append(part)
    return torch.cat(parts)


def caption_codes(metas: list[dict], attributes: dict[str, list[str]]) -> torch.Tensor:
    """(N, C, code_size): the code of every caption of N samples with C captions each."""
    if not knows_named(metas):
        raise T2IError("train.text: oracle needs samples that say which attributes each caption names "
                       "(meta 'named', as synthetic flowers have); this dataset's samples do not")
    out = []
    for m in metas:
        values = attribute_values(m)
        out.append(torch.stack([code({a: values[a] for a in named if a in values}, attributes)
                                for named in m["named"]]))
    return torch.stack(out)


def codes(metas: list[dict], picks: torch.Tensor, attributes: dict[str, list[str]]) -> torch.Tensor:
    """(B, code_size): the mean code of each sample's picked captions (``picks`` (B, k))."""
    every = caption_codes(metas, attributes)  # (B, C, code_size)
    return every[torch.arange(len(metas))[:, None], picks].mean(dim=1)


def template_values(caption: str) -> dict[str, str]:
    """{attribute: value} a synthetic-flowers caption names, read from its words (the training
    templates and the probes' all-four ones); a ValueError for other wording."""
    from t2i.data import synth
    from t2i.probes import ALL_FOUR

    try:
        _, words = synth.parse(caption)
    except ValueError:
        _, words = synth.parse(caption, ALL_FOUR)
    count = {w: str(n) for n, w in synth.NUMBER_WORDS.items()} | {str(n): str(n) for n in synth.NUMBER_WORDS}
    shape = {w: s for s, ws in synth.SHAPE_WORDS.items() for w in ws}
    read = {"p": lambda w: w, "c": lambda w: w, "n": count.__getitem__, "s": shape.__getitem__}
    return {synth.SLOTS[k]: read[k](w) for k, w in words.items() if k in read}


class OracleHead(nn.Module):
    """Caption embeddings -> oracle codes, by exact lookup (cosine above 0.999) in a table of the
    captions whose attributes are known; ``add`` fills it."""

    def __init__(self, attributes: dict[str, list[str]]) -> None:
        super().__init__()
        self.attributes = attributes
        self.register_buffer("keys", torch.zeros(0, 0))
        self.register_buffer("values", torch.zeros(0, code_size(attributes)))

    def add(self, emb: torch.Tensor, codes: torch.Tensor) -> "OracleHead":
        """Add (M, D) caption embeddings and their (M, code_size) codes."""
        keys = F.normalize(emb.float().reshape(-1, emb.shape[-1]), dim=-1)
        old = self.keys if self.keys.numel() else keys[:0]
        self.keys = torch.cat([old, keys.to(old.device)])
        self.values = torch.cat([self.values, codes.float().reshape(-1, self.values.size(1)).to(old.device)])
        return self

    @property
    def in_dim(self) -> int:
        """The caption embedding's size."""
        return self.keys.size(1)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        sim = F.normalize(emb.float(), dim=-1) @ self.keys.t()  # (B, M)
        best, at = sim.max(dim=1)
        if (best < 0.999).any():
            raise T2IError("the oracle condition knows only captions whose attributes are known (the dataset's "
                           "own and the probes'); this one is not among them")
        return self.values[at]  # (B, code_size)


def head_for(embeddings: Path, attributes: dict[str, list[str]], split: str = "test") -> OracleHead:
    """The table of every caption of ``split`` in ``embeddings`` (an embedded-shards folder) and
    of its probes (``t2i.probes``): what the grid, D's probe and the evaluate stage ask."""
    from t2i import probes
    from t2i.data.loader import batches, embedded_urls

    head = OracleHead(attributes)
    for b in batches(embedded_urls(embeddings, split), 256, drop_last=False):
        head.add(b["emb"], caption_codes(b["meta"], attributes))
    found = probes.load_probes(embeddings)
    if found is not None:
        for rows in found["d_check"].values():
            for texts, emb in ((rows["true"], rows["true_emb"]), (rows["altered"], rows["altered_emb"])):
                head.add(emb, torch.stack([code(template_values(t), attributes) for t in texts]))
        for rows in found["g_check"].values():
            head.add(rows["emb"], torch.stack([code({k: str(v) for k, v in a.items()}, attributes)
                                               for a in rows["attributes"]]))
    return head
