"""Classic IR/VIS fusion baselines, and the colour convention all fusion methods here share.

Every method fuses intensities only: the VIS image is split into luma Y and chroma (Cb, Cr)
(full-range YCbCr, :mod:`kornia.color`), the IR image is fused with Y, and the result is recombined
with the VIS chroma. A gray VIS image (one channel, or three equal channels) gives an exactly gray
result.

Shapes: ``ir`` (B, 1, H, W), ``vi`` (B, 3, H, W) or (B, 1, H, W), floats in [0, 1]; outputs
(B, 3, H, W) RGB in [0, 1].
"""
from __future__ import annotations

import torch
from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb
from kornia.geometry.transform import build_laplacian_pyramid, pyrup

NEUTRAL_CHROMA = 0.5


def is_gray(vi: torch.Tensor) -> torch.Tensor:
    """(B,) bool: True where the VIS image has one channel or three exactly equal channels."""
    if vi.shape[1] == 1:
        return torch.ones(vi.shape[0], dtype=torch.bool, device=vi.device)
    flags = [torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]) for image in vi]
    return torch.tensor(flags, dtype=torch.bool, device=vi.device)


def vis_to_ycbcr(vi: torch.Tensor) -> torch.Tensor:
    """VIS (B, 3 or 1, H, W) to YCbCr (B, 3, H, W); gray samples get exactly neutral chroma 0.5."""
    if vi.shape[1] == 1:
        return torch.cat([vi, torch.full_like(vi, NEUTRAL_CHROMA).expand(-1, 2, -1, -1)], dim=1)
    ycbcr = rgb_to_ycbcr(vi)
    gray = is_gray(vi)
    if gray.any():
        ycbcr = torch.cat([ycbcr[:, :1], neutralize_gray(ycbcr[:, 1:], gray)], dim=1)
    return ycbcr


def split_luma_chroma(vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split VIS into luma (B, 1, H, W) and chroma (B, 2, H, W); gray samples get neutral chroma 0.5."""
    ycbcr = vis_to_ycbcr(vi)
    return ycbcr[:, :1], ycbcr[:, 1:]


def neutralize_gray(chroma: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Set the chroma (B, 2, H, W) of the samples flagged in ``gray`` (B,) to exactly neutral."""
    if not gray.any():
        return chroma
    return torch.where(gray[:, None, None, None], torch.full_like(chroma, NEUTRAL_CHROMA), chroma)


def merge_luma_chroma(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Recombine luma (B, 1, H, W) and chroma (B, 2, H, W) into RGB (B, 3, H, W) in [0, 1].

    Neutral chroma (exactly 0.5) gives R = G = B = Y exactly.
    """
    return ycbcr_to_rgb(torch.cat([luma.clamp(0.0, 1.0), chroma], dim=1))


def mean_fusion(ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Fused Y = (IR + VIS Y) / 2, VIS chroma kept."""
    luma, chroma = split_luma_chroma(vi)
    return merge_luma_chroma(0.5 * (ir + luma), chroma)


def max_fusion(ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Fused Y = max(IR, VIS Y) per pixel (max-select of intensities), VIS chroma kept."""
    luma, chroma = split_luma_chroma(vi)
    return merge_luma_chroma(torch.maximum(ir, luma), chroma)


def laplacian_pyramid_fusion(ir: torch.Tensor, vi: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Laplacian-pyramid fusion (Burt & Adelson): per band-pass level keep the coefficient of larger
    magnitude (the sharper source), average the coarsest Gaussian level, and collapse the pyramid.

    Args:
        ir: (B, 1, H, W) infrared image.
        vi: (B, 3, H, W) or (B, 1, H, W) visible image.
        levels: number of pyramid levels, coarsest (base) level included.

    Returns:
        (B, 3, H, W) fused RGB image; Y is clamped to [0, 1] since collapsing mixed bands can overshoot.
    """
    luma, chroma = split_luma_chroma(vi)
    height, width = luma.shape[-2:]
    # kornia pads both pyramids identically (reflect, to a power of two) so their levels align.
    ir_pyramid = build_laplacian_pyramid(ir, levels)
    vi_pyramid = build_laplacian_pyramid(luma, levels)
    fused = 0.5 * (ir_pyramid[-1] + vi_pyramid[-1])
    for ir_band, vi_band in zip(reversed(ir_pyramid[:-1]), reversed(vi_pyramid[:-1])):
        band = torch.where(ir_band.abs() > vi_band.abs(), ir_band, vi_band)
        fused = pyrup(fused) + band
    return merge_luma_chroma(fused[..., :height, :width], chroma)
