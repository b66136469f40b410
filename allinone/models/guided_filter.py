"""The guided filter (He, Sun & Tang, ECCV 2010) and the debanding FusionCNN applies before it dehazes.

The guided filter fits, in every window, a linear map ``q = a I + b`` from a guide ``I`` to the input
``p`` (least squares, with ``eps`` penalising the slope ``a``) and averages the maps of the windows that
cover a pixel. Where the guide varies much more than ``sqrt(eps)`` the output follows the guide's edges;
where it varies less, ``a`` falls to 0 and the output is the local mean of ``p``. Filtering an image with
itself as guide is therefore an edge-preserving smoothing with a threshold ``sqrt(eps)``.

All functions take ``(B, C, H, W)`` tensors and are local: a pixel depends on the ``2 * size`` pixels
around it, so tiled inference is unaffected.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from allinone.models.dark_channel import box_mean

# Steps of 8-bit quantization, 1 / 255 each, are what amplification turns into visible contour bands: a
# dehazing that divides by a transmission of 0.1 makes one grey level ten. Debanding fits its filter in
# windows of DEBAND_WINDOW pixels on a DEBAND_SUBSAMPLE times coarser grid: wide enough to span the steps of a
# slowly varying veil, and cheap (the windowed means run on 1/16 of the pixels).
DEBAND_WINDOW = 11
DEBAND_SUBSAMPLE = 4


def guided_filter(guide: torch.Tensor, source: torch.Tensor, size: int, eps: float, subsample: int = 1) -> torch.Tensor:
    """Guided filter of ``source`` (B, C, H, W) by ``guide`` (B, C or 1, H, W), windows of ``size`` (odd) pixels.

    ``subsample > 1`` is the fast guided filter (He & Sun 2015): the linear coefficients are fitted on a
    grid ``subsample`` times coarser (mean-pooled, windows of about ``size`` full-resolution pixels) and
    upsampled bilinearly, then applied to the full-resolution guide; H and W must be multiples of
    ``subsample``. Returns (B, C, H, W).
    """
    if subsample < 1:
        raise ValueError(f"subsample must be >= 1, got {subsample}")
    if guide.shape[-1] % subsample or guide.shape[-2] % subsample:
        raise ValueError(f"image size {tuple(guide.shape[-2:])} is not a multiple of subsample {subsample}")
    self_guided = source is guide  # then the source's statistics are the guide's: compute them once
    coarse_guide = F.avg_pool2d(guide, subsample) if subsample > 1 else guide
    coarse_source = coarse_guide if self_guided else (F.avg_pool2d(source, subsample) if subsample > 1 else source)
    window = max(1, round(size / subsample)) | 1
    mean_guide = box_mean(coarse_guide, window)
    mean_source = mean_guide if self_guided else box_mean(coarse_source, window)
    variance = box_mean(coarse_guide * coarse_guide, window) - mean_guide * mean_guide
    covariance = variance if self_guided else box_mean(coarse_guide * coarse_source, window) - mean_guide * mean_source
    slope = covariance / (variance + eps)
    offset = mean_source - slope * mean_guide
    # Both maps in one call: the box means and the upsampling are the costly steps at full resolution.
    maps = box_mean(torch.cat([slope, offset], dim=1), window)
    if subsample > 1:
        maps = F.interpolate(maps, scale_factor=subsample, mode="bilinear", align_corners=False)
    slope, offset = maps.chunk(2, dim=1)
    return torch.addcmul(offset, slope, guide)


def smooth_below(image: torch.Tensor, levels: float, size: int, subsample: int) -> torch.Tensor:
    """Smooth out variations below about ``levels`` 8-bit grey levels in ``image`` (B, C, H, W) in [0, 1],
    keeping stronger edges: each channel guided by itself, ``eps = (levels / 255)^2``, windows of ``size``
    pixels fitted on a ``subsample`` times coarser grid (H and W multiples of it). ``levels`` 0 returns the
    image unchanged."""
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    if levels == 0:
        return image
    return guided_filter(image, image, size, (levels / 255.0) ** 2, subsample).clamp_(0.0, 1.0)


def deband(image: torch.Tensor, levels: float) -> torch.Tensor:
    """:func:`smooth_below` with the debanding window and grid: steps below ``levels`` grey levels become
    slopes. H and W must be multiples of ``DEBAND_SUBSAMPLE``."""
    return smooth_below(image, levels, DEBAND_WINDOW, DEBAND_SUBSAMPLE)
