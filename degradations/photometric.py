"""Exposure and contrast: night-time low light, over-exposure, flat (low-contrast) images.

Light adds up linearly on the sensor, while stored images are sRGB-encoded (gamma ~ 1/2.2),
so exposure changes and photon noise are applied in linear light between
``srgb_to_linear`` and ``linear_to_srgb``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb

from .noise import gaussian_noise, poisson_noise


def _any_channels(curve: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply an element-wise kornia colour curve, which insists on a 3-channel axis, to any C."""
    if x.shape[1] == 3:
        return curve(x)
    # Lay the values out as (3, 1, n) so the shape check passes without computing anything twice.
    flat = x.reshape(-1)
    padded = F.pad(flat, (0, -flat.numel() % 3))
    return curve(padded.view(3, 1, -1)).reshape(-1)[: flat.numel()].reshape(x.shape)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Decode the sRGB transfer curve to linear light, element-wise.

    Args:
        x: sRGB-encoded images, shape ``(B, C, H, W)``, any C, values in [0, 1].

    Returns:
        Linear intensities, same shape, in [0, 1].
    """
    return _any_channels(rgb_to_linear_rgb, x).clamp(0.0, 1.0)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Encode linear light with the sRGB transfer curve, element-wise.

    Args:
        x: linear intensities, shape ``(B, C, H, W)``, any C, values in [0, 1].

    Returns:
        sRGB-encoded images, same shape, in [0, 1].
    """
    return _any_channels(linear_rgb_to_rgb, x).clamp(0.0, 1.0)


def round_to_8bit(x: torch.Tensor) -> torch.Tensor:
    """``round(x * 255) / 255``: the 256 levels a camera (or an 8-bit image file) keeps of [0, 1]."""
    return torch.round(x * 255) / 255


def low_light(
    x: torch.Tensor,
    exposure: float,
    photons: float,
    read_sigma: float,
    *,
    generator: torch.Generator,
    quantize: bool = True,
) -> torch.Tensor:
    """Night-time / under-exposed capture of a visible image.

    Model, in linear light ``L = srgb_to_linear(x)``::

        S = exposure * L                                  fewer photons reach the sensor
        N = Poisson(S * photons) / photons                shot noise
        N = clamp(N + read_sigma * n, 0, 1), n ~ N(0, 1)  read noise, black level, saturation
        y = linear_to_srgb(N), then round(y * 255) / 255  camera encoding to 8 bits

    ``photons`` counts photons at linear 1 *after* the exposure scaling, so the darkened
    image holds ``exposure * L * photons`` photons: the darker, the noisier. The 8-bit
    quantisation crushes the darkest tones into few levels, as in real night footage.

    Args:
        x: sRGB images, shape ``(B, C, H, W)``, values in [0, 1].
        exposure: fraction of the light kept, 0 < exposure <= 1 (0.3 dim, 0.02 dark night).
        photons: photons at linear intensity 1, > 0 (10^4 clean, 100 very noisy).
        read_sigma: read-noise standard deviation in linear units, >= 0 (0.001-0.02).
        generator: source of randomness, on ``x``'s device.
        quantize: round to 8-bit levels.

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1].
    """
    if not 0 < exposure <= 1:
        raise ValueError(f"exposure must be in (0, 1], got {exposure}")
    signal = poisson_noise(srgb_to_linear(x) * exposure, photons, generator=generator)
    if read_sigma > 0:
        signal = gaussian_noise(signal, read_sigma, generator=generator)
    out = linear_to_srgb(signal)
    if quantize:
        out = round_to_8bit(out)
    return out


def overexposure(x: torch.Tensor, gain: float) -> torch.Tensor:
    """Over-exposed capture: too much light, highlights clip at sensor saturation.

    ``y = linear_to_srgb(min(gain * srgb_to_linear(x), 1))``.

    Args:
        x: sRGB images, shape ``(B, C, H, W)``, values in [0, 1].
        gain: exposure multiplier in linear light, >= 1 (2 = one stop over, 8 = three stops).

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1]; differentiable in ``x`` where not clipped.
    """
    if gain < 1:
        raise ValueError(f"gain must be >= 1, got {gain}")
    return linear_to_srgb((srgb_to_linear(x) * gain).clamp(max=1.0))


def low_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Flat image (veiling glare, poor dynamic range): shrink intensities toward the mean.

    ``y = m + factor * (x - m)`` with ``m`` the mean of each image and channel, so the mean is
    kept and the standard deviation is multiplied by ``factor``.

    Args:
        x: images, shape ``(B, C, H, W)``, values in [0, 1].
        factor: contrast kept, 0 < factor <= 1 (1 identity, 0.3 strongly washed out).

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1]; differentiable in ``x``.
    """
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], got {factor}")
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (mean + factor * (x - mean)).clamp(0.0, 1.0)
