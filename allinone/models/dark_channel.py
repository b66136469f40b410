"""The dark channel prior (He, Sun & Tang, CVPR 2009): a parameter-free dehazing of RGB images.

Haze follows the atmospheric scattering model ``I = J t + A (1 - t)``: the scene radiance J attenuated by
the transmission t, plus airlight A. In haze-free outdoor patches some pixel is dark in some channel,
so the minimum over the channels and a patch (the dark channel) of ``I / A`` estimates ``1 - t``.
FusionCNN blends this estimate of J into its VIS input where it predicts haze (``dehaze_prior``): a
small CNN cannot learn to divide by a transmission that falls to 0.1 in dense fog, but the prior can.

All functions take ``(B, 3, H, W)`` RGB in [0, 1] and are local (patch minima, box means) except the
airlight, which is one colour per image; under tiled inference each tile estimates its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_odd(size: int) -> int:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd number, got {size}")
    return size // 2


def patch_min(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Minimum over ``patch`` x ``patch`` windows (odd ``patch``, same size out, edges replicated), per
    channel. Separable (rows, then columns): 2 * patch comparisons per pixel instead of patch**2."""
    pad = _check_odd(patch)
    x = -F.max_pool2d(F.pad(-x, (pad, pad, 0, 0), mode="replicate"), (1, patch), stride=1)
    return -F.max_pool2d(F.pad(-x, (0, 0, pad, pad), mode="replicate"), (patch, 1), stride=1)


def box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over ``size`` x ``size`` windows (odd ``size``, same size out, edges replicated), separable.

    Each pass is a depthwise convolution with a constant kernel: on a CPU it runs faster than avg_pool2d with
    a one-row or one-column window (docs/BENCHMARKS.md, speed section), and gives the same means.
    """
    pad = _check_odd(size)
    channels = x.shape[1]
    row = x.new_full((channels, 1, 1, size), 1.0 / size)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), row, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), row.transpose(2, 3), groups=channels)


def dark_channel(rgb: torch.Tensor, patch: int = 15) -> torch.Tensor:
    """The dark channel (B, 1, H, W): minimum over the colour channels and a patch."""
    return patch_min(rgb.amin(dim=1, keepdim=True), patch)


def estimate_airlight(rgb: torch.Tensor, dark: torch.Tensor, fraction: float = 0.001) -> torch.Tensor:
    """Airlight (B, 3, 1, 1): the mean colour of the ``fraction`` of pixels with the brightest dark channel
    (the haziest, most distant ones), at least 1 pixel."""
    count = max(1, int(fraction * dark[0].numel()))
    index = dark.flatten(1).topk(count, dim=1).indices  # (B, count)
    colours = rgb.flatten(2).gather(2, index[:, None, :].expand(-1, rgb.shape[1], -1))
    return colours.mean(dim=2)[..., None, None]


def block_min(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Minimum over non-overlapping ``stride`` x ``stride`` blocks, per channel: (B, C, ceil(H / stride),
    ceil(W / stride)); blocks cut by the border take the minimum of the pixels they hold."""
    return -F.max_pool2d(-x, stride, stride, ceil_mode=True)


def _coarse_window(size: int, stride: int) -> int:
    """The odd window on a ``stride``-times coarser grid that spans about ``size`` pixels."""
    return max(1, round(size / stride)) | 1


def dark_channel_dehaze(rgb: torch.Tensor, *, patch: int = 15, omega: float = 0.95, min_transmission: float = 0.1,
                        refine: int = 31, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Dehaze ``rgb`` (B, 3, H, W) in [0, 1]; returns (radiance J in [0, 1], transmission t (B, 1, H, W)).

    ``t = 1 - omega * dark_channel(I / A)``, smoothed by a ``refine``-pixel box mean (instead of the
    paper's soft matting, which costs far more), floored at ``min_transmission``; ``omega < 1`` keeps a
    trace of haze for depth perception, as in the paper. ``J = (I - A) / t + A``. A gray image (equal
    channels) stays gray.

    ``stride > 1`` estimates the airlight and the transmission on a grid ``stride`` times coarser (minima
    of ``stride`` x ``stride`` blocks, then windows spanning about ``patch`` and ``refine`` pixels) and
    upsamples the transmission bilinearly before the full-resolution inversion: the map is smooth after
    the refinement anyway, and the windowed minima, which cost most, run on ``1 / stride**2`` of the pixels.
    FusionCNN uses stride 4 (a few ms per 640x480 frame instead of tens).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    coarse = rgb if stride == 1 else block_min(rgb, stride)
    patch, refine = (patch, refine) if stride == 1 else (_coarse_window(patch, stride), _coarse_window(refine, stride))
    airlight = estimate_airlight(coarse, dark_channel(coarse, patch)).clamp_min(1e-3)
    transmission = 1.0 - omega * dark_channel(coarse / airlight, patch)
    transmission = box_mean(transmission, refine)
    if stride > 1:
        transmission = F.interpolate(transmission, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
    transmission = transmission.clamp_min(min_transmission)
    radiance = (rgb - airlight) / transmission + airlight
    return radiance.clamp(0.0, 1.0), transmission
