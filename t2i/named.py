"""What a sample's captions and attributes say: which captions describe which images (what a
contrastive loss may not count as a negative and what a matching-aware D may not be shown as a
wrong caption), and the attribute labels the evaluator and AC-GAN's heads classify.

A source whose samples say which attributes each caption names (``meta["named"]``, one list per
caption, beside ``meta["attributes"]``; synthetic flowers) is judged by meaning: a caption fits
an image when every attribute it names has the image's value. "A red flower" fits every red
flower, whatever its centre, and "a red flower with a black centre" does not fit a red flower
with a yellow one, although both are of the same petal colour. A source without that knowledge
(free-text CUB or Oxford captions, folders, Hugging Face) is judged by class: a caption fits the
images of its own class (``meta["class_id"]``, when there is one) and any image that has a
caption of the very same words.
"""

from __future__ import annotations

import torch

from t2i import T2IError

CLASS_HEAD = "class"  # the single attribute of a dataset without attributes: its class id


def knows_named(metas: list[dict]) -> bool:
    """Do these samples say which attributes each caption names (and carry those attributes)?"""
    return bool(metas) and all("named" in m and "attributes" in m for m in metas)


def fits(metas: list[dict], picks: torch.Tensor, captions: list[list[str]]) -> torch.Tensor:
    """(B, B) bool: ``[i, j]`` is True when sample j's picked captions describe sample i's image.

    ``picks``: (B, k) the indices of the captions picked for each sample (their mean is its text
    code); sample j's caption set names what any of them names. ``captions``: each sample's
    captions. The diagonal is True."""
    B = len(metas)
    picks = picks.reshape(B, -1)
    if knows_named(metas):
        val, said = _named_values(metas, picks)  # (B, A) each: values, and what j's captions name
        same = val[:, None, :] == val[None, :, :]  # (B_i, B_j, A)
        out = (same | ~said[None, :, :]).all(dim=-1)
    else:
        cls = torch.tensor([int(m.get("class_id", -1)) for m in metas])
        out = (cls[:, None] == cls[None, :]) & (cls[:, None] >= 0)
        own = [set(caps) for caps in captions]
        said = [[captions[j][c] for c in p.tolist()] for j, p in enumerate(picks)]
        out |= torch.tensor([[any(t in own[i] for t in said[j]) for j in range(B)] for i in range(B)])
    return out | torch.eye(B, dtype=torch.bool)



def agrees(metas: list[dict], picks: torch.Tensor, captions: list[list[str]]) -> torch.Tensor:
    """(B, B) bool: ``[i, j]`` is True when sample j's picked captions ask nothing that sample i's
    contradict (no attribute both name with another value): an image drawn from i's captions,
    which need show only what they name, may fit j's as well. Without named attributes, as
    ``fits``. The diagonal is True."""
    if not knows_named(metas):
        return fits(metas, picks, captions)
    B = len(metas)
    picks = picks.reshape(B, -1)
    val, said = _named_values(metas, picks)
    clash = said[:, None, :] & said[None, :, :] & (val[:, None, :] != val[None, :, :])  # (B, B, A)
    return ~clash.any(dim=-1) | torch.eye(B, dtype=torch.bool)


def _named_values(metas: list[dict], picks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) value codes of every sample's attributes, and (B, A) bool: which its picked captions name."""
    attrs = sorted({a for m in metas for a in m["attributes"]})
    value = [[str(m["attributes"].get(a)) for a in attrs] for m in metas]
    codes = {v: n for n, v in enumerate(sorted({v for row in value for v in row}))}
    val = torch.tensor([[codes[v] for v in row] for row in value])
    said = torch.tensor([[any(a in m["named"][c] for c in p.tolist()) for a in attrs] for m, p in zip(metas, picks)])
    return val, said


def _value_key(v: str) -> tuple:
    """Sort numbers numerically ("3" < "10"), then words alphabetically."""
    return (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v)


def attribute_values(meta: dict) -> dict[str, str]:
    """{attribute: value as a string} of one sample; the class id when it has no attributes."""
    if "attributes" in meta:  # an image may lack some or all of its dataset's attributes (CUB)
        return {k: str(v) for k, v in meta["attributes"].items()}
    return {CLASS_HEAD: str(meta.get("class_id", -1))}


def discover_attributes(metas: list[dict]) -> dict[str, list[str]]:
    """The vocabulary of every attribute seen in ``metas``, each sorted."""
    seen: dict[str, set[str]] = {}
    for m in metas:
        for k, v in attribute_values(m).items():
            seen.setdefault(k, set()).add(v)
    if CLASS_HEAD in seen:
        seen[CLASS_HEAD].discard("-1")  # samples without a class id teach nothing
    return {k: sorted(v, key=_value_key) for k, v in sorted(seen.items()) if v}


def attribute_labels(metas: list[dict], attributes: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """{attribute: (N,) vocab index}; -1 where a sample lacks the attribute or has an unseen value."""
    index = {k: {v: i for i, v in enumerate(vocab)} for k, vocab in attributes.items()}
    values = [attribute_values(m) for m in metas]
    return {k: torch.tensor([index[k].get(vals.get(k, ""), -1) for vals in values], dtype=torch.long)
            for k in attributes}


def label_matrix(metas: list[dict], attributes: dict[str, list[str]]) -> torch.Tensor:
    """``attribute_labels`` as one (N, A) long tensor, the columns in ``attributes`` order."""
    return torch.stack(list(attribute_labels(metas, attributes).values()), dim=1)


class NearMisses:
    """Every training caption that names attributes, as a bank to draw *near misses* from: for an
    image, a caption that names one attribute with another value and everything else it names
    with the image's own (``ground.near_miss``). In-batch negatives rarely differ from an image in
    the petal count alone, so a contrastive encoder learns the colours and little else; near
    misses ask it for each attribute in turn. Only for sources that say what their captions name.

    ``emb`` (M, D): the captions' embeddings; ``named`` (M, A): each caption's value index per
    attribute (``label_matrix``), -1 where it names none; ``vocab``: the attributes' values
    (``discover_attributes``)."""

    def __init__(self, emb: torch.Tensor, named: torch.Tensor, vocab: dict[str, list[str]]):
        self.emb, self.named, self.vocab = emb, named, vocab

    @classmethod
    def collect(cls, batches_) -> "NearMisses":
        """The bank of every caption of the loader batches ``batches_``; a source that does not say
        what its captions name is an error naming the first such sample."""
        embs, metas = [], []
        for b in batches_:
            if not knows_named(b["meta"]):
                raise T2IError(f"ground.near_miss: sample {b['key'][0]} does not say which attributes its "
                               "captions name (only synthetic-flowers does): set ground.near_miss=0")
            embs += [e[: len(m["named"])] for m, e in zip(b["meta"], b["emb"])]  # (captions, D) each
            metas += b["meta"]
        vocab = discover_attributes(metas)
        values = label_matrix(metas, vocab)  # (N, A)
        said = torch.tensor([[a in n for a in vocab] for m in metas for n in m["named"]])  # (M, A)
        per_caption = values.repeat_interleave(torch.tensor([len(m["named"]) for m in metas]), dim=0)  # (M, A)
        return cls(torch.cat(embs), per_caption.masked_fill(~said, -1), vocab)

    def values(self, metas: list[dict]) -> torch.Tensor:
        """(B, A) the images' value indices (-1 where an image lacks the attribute or has a value
        the bank never saw)."""
        return label_matrix(metas, self.vocab)

    def fits(self, values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(B, len(idx)) bool: bank caption idx[j] describes image i (everything it names matches)."""
        v = self.named[idx]  # (K, A)
        return ((v[None] == -1) | (v[None] == values[:, None])).all(dim=-1)

    def draw(self, x: torch.Tensor, k: int, rng: torch.Generator) -> torch.Tensor:
        """(B, k) bank indices for images of value indices ``x`` (B, A) (``values``): for each,
        k near misses, each drawn by picking one of the attributes it can be missed on uniformly,
        then one caption that misses it there alone. An image with no near miss in the bank gets
        any caption that does not describe it."""
        differs = (self.named[None] != -1) & (self.named[None] != x[:, None])  # (B, M, A)
        one = differs.sum(dim=-1) == 1  # (B, M)
        per_attr = (differs & one[..., None]).sum(dim=1)  # (B, A) candidates missing on each attribute
        which = differs.float().argmax(dim=-1)  # (B, M) the attribute a near miss misses on
        n_attr = (per_attr > 0).sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        weight = one / (per_attr.gather(1, which).clamp(min=1) * n_attr)  # (B, M): 1 / (attributes * candidates)
        none = ~one.any(dim=1)
        if none.any():
            weight[none] = (differs[none].any(dim=-1)).float() + 1e-12
        return torch.multinomial(weight, k, replacement=True, generator=rng)
