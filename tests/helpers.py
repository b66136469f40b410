"""Test helpers: small synthetic IR/VIS pair folders, and a stand-in for the MiniLM text encoder."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from allinone.conditioning import TEXT_EMBED_DIM


class FakeTextEncoder:
    """Deterministic unit vectors per text (no model load); records the texts it was asked to encode."""

    dim = TEXT_EMBED_DIM

    def __init__(self):
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded.extend(texts)
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            row = torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
            rows.append(row / row.norm())
        return torch.stack(rows)


def make_pair_folders(root: Path, names=("a", "b", "c"), size=(48, 40), seed=0) -> tuple[Path, Path]:
    """Write textured RGB VIS and gray IR PNGs named by ``names``; returns (ir_dir, vi_dir)."""
    rng = np.random.default_rng(seed)
    ir_dir, vi_dir = root / "ir", root / "vi"
    ir_dir.mkdir(parents=True, exist_ok=True)
    vi_dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i, name in enumerate(names):
        base = (np.sin(xx / (3 + i)) * np.cos(yy / 5) * 60 + 120).astype(np.float32)
        vi = np.stack([base + rng.normal(0, 10, base.shape) + 20 * c for c in range(3)], -1)
        ir = base[::-1] * 0.8 + rng.normal(0, 5, base.shape)
        Image.fromarray(np.clip(vi, 0, 255).astype(np.uint8)).save(vi_dir / f"{name}.png")
        Image.fromarray(np.clip(ir, 0, 255).astype(np.uint8)).save(ir_dir / f"{name}.png")
    return ir_dir, vi_dir
