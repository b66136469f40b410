"""Rain streaks: falling drops smeared into bright lines during the exposure.

Model: drops are sparse points of random brightness; over the exposure each one moves
``length`` pixels along ``angle_deg`` and leaves a streak (the drop convolved with the motion
PSF, scaled so a streak is as bright as its drop). Drops are lit by ambient light and add
light to the scene, so the streak layer ``R`` is screen-blended,
``I = 1 - (1 - J)(1 - intensity * R)``, which brightens but never saturates past 1.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .blur import motion_kernel2d
from .filtering import convolve2d

# Drop brightness is drawn uniformly in [DROP_BRIGHTNESS_MIN, 1]: nearer or better-lit drops
# are brighter; ``intensity`` then scales the whole layer.
DROP_BRIGHTNESS_MIN = 0.5


def rain_layer(
    shape: Sequence[int],
    density: float,
    length: float,
    angle_deg: float,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Streak layer shared by all channels (and reusable for a co-registered IR/VIS pair).

    Args:
        shape: ``(B, C, H, W)`` or ``(B, H, W)`` of the images it is meant for (C is ignored).
        density: probability that a pixel holds a drop, in [0, 1] (0.001 drizzle,
            0.01 heavy rain).
        length: streak length in pixels, >= 0 (10-40 px on 640x480 frames).
        angle_deg: streak direction, degrees, 0 = horizontal, counter-clockwise
            (90 = vertical fall; 60-120 with wind).
        generator: source of randomness; the layer lives on its device.
        dtype: dtype of the layer.

    Returns:
        Tensor of shape ``(B, 1, H, W)`` in [0, 1], zero away from streaks.
    """
    if not 0 <= density <= 1:
        raise ValueError(f"density must be in [0, 1], got {density}")
    size = (shape[0], 1, shape[-2], shape[-1])
    u = torch.rand(size, generator=generator, dtype=dtype, device=generator.device)
    # One uniform draw serves twice: u < density marks a drop, and given that, u / density is
    # again uniform in [0, 1) and sets the drop's brightness.
    brightness = DROP_BRIGHTNESS_MIN + (1 - DROP_BRIGHTNESS_MIN) * u / max(density, 1e-12)
    drops = torch.where(u < density, brightness, torch.zeros((), dtype=dtype, device=u.device))
    kernel = motion_kernel2d(length, angle_deg, dtype=dtype)
    return convolve2d(drops, kernel / kernel.max()).clamp(0.0, 1.0)


def add_rain_layer(x: torch.Tensor, layer: torch.Tensor, intensity: float) -> torch.Tensor:
    """Screen-blend a streak layer onto images: ``x + intensity * layer * (1 - x)``.

    (The same as ``1 - (1 - x)(1 - intensity * layer)``, written so that pixels without
    streaks are returned exactly.)

    Args:
        x: images, shape ``(B, C, H, W)``, values in [0, 1].
        layer: streaks from ``rain_layer``, shape ``(B, 1, H, W)``, in [0, 1].
        intensity: streak opacity in [0, 1] (0.3 faint, 0.9 bright streaks).

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1].
    """
    return (x + intensity * layer * (1 - x)).clamp(0.0, 1.0)


def rain_streaks(
    x: torch.Tensor,
    density: float,
    length: float,
    angle_deg: float,
    intensity: float,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """Add random rain streaks to images (see the module docstring for the model).

    Args:
        x: images, shape ``(B, C, H, W)``, values in [0, 1].
        density, length, angle_deg: see ``rain_layer``.
        intensity: see ``add_rain_layer``.
        generator: source of randomness, on ``x``'s device.

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1].
    """
    layer = rain_layer(x.shape, density, length, angle_deg, generator=generator, dtype=x.dtype)
    return add_rain_layer(x, layer.to(x.device), intensity)
