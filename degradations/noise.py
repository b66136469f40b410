"""Sensor noise: additive read noise, signal-dependent shot noise, IR fixed-pattern stripes.

All functions draw their randomness from the ``generator`` argument only, which must live on
the same device as ``x``; the output is clamped to [0, 1] (the sensor's black level and
saturation).
"""
from __future__ import annotations

import torch

# Expected photon counts at or above this use the normal approximation N(n, n) of the Poisson
# law (the usual rule of thumb; mean and variance are exact, skewness 1/sqrt(n) <= 0.32 is
# lost, which is invisible in images). Exact Poisson sampling costs 30-50 ns per value on a CPU
# core, i.e. ~40 ms for a 640x480 RGB frame, more than all other ops of a recipe together.
POISSON_NORMAL_APPROX_MIN_COUNT = 10.0


def gaussian_noise(x: torch.Tensor, sigma: float, *, generator: torch.Generator) -> torch.Tensor:
    """Additive white Gaussian noise (read noise of the sensor and amplifier).

    ``y = clamp(x + sigma * n)`` with ``n ~ N(0, 1)`` i.i.d. per pixel and channel.

    Args:
        x: images, shape ``(B, C, H, W)``, values in [0, 1].
        sigma: noise standard deviation in intensity units (1 = full range); about 0.01
            is barely visible, 0.1 is very strong.
        generator: source of randomness.

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1].
    """
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + sigma * noise).clamp(0.0, 1.0)


def poisson_noise(x: torch.Tensor, photons: float, *, generator: torch.Generator) -> torch.Tensor:
    """Photon shot noise: the number of photons collected by a pixel is Poisson distributed.

    ``y = clamp(Poisson(x * photons) / photons)``, so ``E[y] = x`` and ``Var[y] = x / photons``.
    Pixels expecting at least ``POISSON_NORMAL_APPROX_MIN_COUNT`` photons are sampled from the
    normal approximation ``N(x * photons, x * photons)`` for speed; the others exactly.

    Args:
        x: images in linear intensity, shape ``(B, C, H, W)``, values in [0, 1].
        photons: photons collected at ``x = 1`` (full well), > 0; about 10 is extremely noisy,
            1000 mild, 10^4 nearly clean.
        generator: source of randomness.

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1].
    """
    if photons <= 0:
        raise ValueError(f"photons must be > 0, got {photons}")
    expected = x.clamp(min=0.0) * photons
    few_photons = expected < POISSON_NORMAL_APPROX_MIN_COUNT
    counts = expected
    if not few_photons.all():
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        counts = expected + expected.sqrt() * noise
    if few_photons.any():
        # Sampling Poisson(0) elsewhere is nearly free, and cheaper than boolean indexing.
        exact = torch.poisson(expected * few_photons, generator=generator)
        counts = torch.where(few_photons, exact, counts)
    return (counts / photons).clamp(0.0, 1.0)


def stripe_noise(x: torch.Tensor, sigma: float, *, generator: torch.Generator) -> torch.Tensor:
    """Fixed-pattern column noise of uncooled IR focal-plane arrays (microbolometers).

    Each column's readout amplifier has its own offset, so the image gets one additive offset
    per column, ``N(0, sigma^2)``, constant down the column and shared by the channels (drawn
    independently for each image of the batch).

    Args:
        x: images, shape ``(B, C, H, W)``, values in [0, 1].
        sigma: standard deviation of the column offsets, intensity units; 0.01 is faint,
            0.1 dominates the image.
        generator: source of randomness.

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1].
    """
    b, _, _, w = x.shape
    offsets = torch.randn((b, 1, 1, w), generator=generator, dtype=x.dtype, device=x.device)
    return (x + sigma * offsets).clamp(0.0, 1.0)
