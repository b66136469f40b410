"""Tiled inference: run a fusion function on overlapping tiles of a large frame and blend them.

Each tile's output is weighted by a separable raised-cosine ramp over the ``overlap`` pixels it shares
with a neighbouring tile (weight 1 elsewhere and along the frame border), and the weighted sum is
normalised by the sum of weights. Weights fall smoothly to almost zero at inner tile edges, where a
convolutional model sees padding instead of context, so there are no seams; a pointwise function is
reproduced exactly (up to rounding). Only one tile is processed at a time.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

FusionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``min(tile, size)`` covering ``size`` pixels, adjacent tiles
    sharing at least ``overlap`` pixels; the last tile is aligned with the end of the frame."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, size - tile, stride)) + [size - tile]


def blend_ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D blending weights (length,): a raised-cosine rise over the first ``overlap`` samples (if
    ``ramp_start``) and fall over the last ``overlap`` (if ``ramp_end``), 1 in between; always > 0."""
    weights = torch.ones(length, dtype=torch.float64)
    if overlap > 0:
        positions = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap
        rise = 0.5 - 0.5 * torch.cos(math.pi * positions)
        if ramp_start:
            weights[:overlap] *= rise
        if ramp_end:
            weights[length - overlap :] *= rise.flip(0)
    return weights


def tiled_apply(fn: FusionFn, ir: torch.Tensor, vi: torch.Tensor, tile: int = 512, overlap: int = 32) -> torch.Tensor:
    """Apply ``fn(ir_tile, vi_tile) -> out_tile`` over overlapping tiles and blend the results.

    Args:
        fn: a function of an IR tile (B, 1, h, w) and a VIS tile (B, C, h, w) returning (B, K, h, w).
        ir: (B, 1, H, W) infrared frame.
        vi: (B, C, H, W) visible frame, same H and W.
        tile: tile side in pixels (tiles are clipped to the frame).
        overlap: pixels shared by adjacent tiles, blended with raised-cosine weights; should cover the
            distance over which ``fn`` is influenced by a tile edge.

    Returns:
        (B, K, H, W); exactly ``fn(ir, vi)`` when the frame fits in one tile.
    """
    if ir.shape[-2:] != vi.shape[-2:]:
        raise ValueError(f"IR {tuple(ir.shape)} and VIS {tuple(vi.shape)} differ in size")
    if not 0 <= overlap < tile:
        raise ValueError(f"need 0 <= overlap < tile, got overlap={overlap}, tile={tile}")
    height, width = ir.shape[-2:]
    if height <= tile and width <= tile:
        return fn(ir, vi)
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)

    output: torch.Tensor | None = None
    weight_sum = torch.zeros(1, 1, height, width, dtype=torch.float64, device=ir.device)
    for top in rows:
        ramp_y = blend_ramp(tile_h, overlap, top > 0, top + tile_h < height)
        for left in cols:
            ramp_x = blend_ramp(tile_w, overlap, left > 0, left + tile_w < width)
            window = (..., slice(top, top + tile_h), slice(left, left + tile_w))
            result = fn(ir[window], vi[window])
            if result.shape[-2:] != (tile_h, tile_w):
                raise ValueError(f"fn changed the tile size {(tile_h, tile_w)} to {tuple(result.shape[-2:])}")
            if output is None:
                output = result.new_zeros(*result.shape[:2], height, width)
            weight = torch.outer(ramp_y, ramp_x).to(ir.device)
            output[window] += result * weight.to(result.dtype)
            weight_sum[window] += weight
    return output / weight_sum.to(output.dtype)
