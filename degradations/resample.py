"""Low resolution: a coarser sensor or a distant target sampled with fewer pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def downsample(x: torch.Tensor, factor: int, keep_size: bool = True) -> torch.Tensor:
    """Anti-aliased downsampling by an integer factor, optionally upsampled back.

    Model: each low-resolution pixel integrates the scene over a ``factor x factor`` footprint
    (bicubic with anti-aliasing, i.e. the cubic kernel widened by ``factor``), so fine detail
    is lost rather than aliased. With ``keep_size`` the result is brought back to the input
    size by bicubic interpolation, as a restoration network receives it.

    Args:
        x: images, shape ``(B, C, H, W)``, values in [0, 1].
        factor: integer downsampling factor >= 1 (1 returns the input; 2 and 4 are typical).
        keep_size: return the input shape (True) or the small image (False).

    Returns:
        ``(B, C, H, W)`` when ``keep_size``, else ``(B, C, max(1, H // factor),
        max(1, W // factor))``; in [0, 1]; differentiable in ``x``.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor}")
    factor = int(factor)
    if factor == 1:
        return x.clone()
    h, w = x.shape[-2:]
    small_size = (max(1, h // factor), max(1, w // factor))
    small = F.interpolate(x, size=small_size, mode="bicubic", antialias=True, align_corners=False)
    if keep_size:
        small = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    # The cubic kernel has negative lobes and overshoots at edges.
    return small.clamp(0.0, 1.0)
