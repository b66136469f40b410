"""Optical and motion blur: Gaussian (defocus, atmosphere, lens) and linear motion kernels.

Physical model: the sensor records the sharp image convolved with a point spread function
(PSF) that integrates to 1, so blur redistributes light without changing the mean.

- A (possibly anisotropic, rotated) Gaussian PSF approximates defocus, lens aberrations and
  atmospheric turbulence.
- A line PSF of length ``L`` pixels models a camera or platform moving uniformly by ``L``
  pixels during the exposure (camera shake, vehicle motion).

Angles follow the image as displayed: 0 is horizontal (pointing right) and positive angles
turn counter-clockwise, i.e. towards the top rows.
"""
from __future__ import annotations

import math

import torch
from kornia.filters import gaussian_blur2d

from .filtering import convolve2d


def _offset_grid(size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel offsets (x to the right, y upwards) from the centre of a size x size kernel."""
    r = torch.arange(size, dtype=dtype) - size // 2
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    return cols, -rows


def gaussian_kernel2d(
    sigma_x: float,
    sigma_y: float,
    theta: float = 0.0,
    size: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sampled, rotated anisotropic Gaussian PSF.

    ``K(p) ~ exp(-p^T S^-1 p / 2)`` with ``S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``,
    normalised to sum to 1.

    Args:
        sigma_x: standard deviation along the kernel's first axis, pixels, > 0.
        sigma_y: standard deviation along the second axis, pixels, > 0.
        theta: counter-clockwise rotation of the first axis from horizontal, radians.
        size: side length (odd); default ``2 * ceil(3 * max(sigma_x, sigma_y)) + 1``.
        dtype: dtype of the returned kernel.

    Returns:
        Tensor of shape ``(size, size)``, summing to 1.
    """
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be > 0, got {sigma_x}, {sigma_y}")
    if size is None:
        size = 2 * math.ceil(3 * max(sigma_x, sigma_y)) + 1
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be odd and positive, got {size}")
    x, y = _offset_grid(size, torch.float64)
    cos, sin = math.cos(theta), math.sin(theta)
    along = x * cos + y * sin  # coordinate along the rotated first axis
    across = -x * sin + y * cos
    kernel = torch.exp(-0.5 * ((along / sigma_x) ** 2 + (across / sigma_y) ** 2))
    return (kernel / kernel.sum()).to(dtype)


def gaussian_blur(
    x: torch.Tensor, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> torch.Tensor:
    """Blur with a Gaussian PSF (isotropic, or anisotropic and rotated).

    Args:
        x: images, shape ``(B, C, H, W)``, values in [0, 1].
        sigma_x: PSF standard deviation in pixels (along the rotated first axis when
            anisotropic), >= 0. Visible blur starts near 0.5 px; by 5 px most texture is gone.
        sigma_y: standard deviation across it, pixels; ``None`` for an isotropic PSF. The
            input is returned when both sigmas are 0 (or ``sigma_x`` is 0 and this is None);
            an anisotropic PSF needs both > 0.
        theta: counter-clockwise rotation of the first axis, radians (anisotropic only).

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1]; differentiable in ``x``.
    """
    if sigma_x < 0 or (sigma_y is not None and sigma_y < 0):
        raise ValueError(f"sigmas must be >= 0, got {sigma_x}, {sigma_y}")
    if sigma_y is None:
        if sigma_x == 0:
            return x.clone()
        size = 2 * math.ceil(3 * sigma_x) + 1
        # kornia's separable filter is the fast path but needs reflect padding to fit.
        if size // 2 < min(x.shape[-2:]):
            out = gaussian_blur2d(x, (size, size), (sigma_x, sigma_x), border_type="reflect")
            return out.clamp(0.0, 1.0)
        sigma_y = sigma_x
    if sigma_x == 0 and sigma_y == 0:
        return x.clone()
    kernel = gaussian_kernel2d(sigma_x, sigma_y, theta, dtype=x.dtype)
    return convolve2d(x, kernel).clamp(0.0, 1.0)


def motion_kernel2d(
    length: float, angle_deg: float, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Line PSF of a uniform linear motion of ``length`` pixels at ``angle_deg``.

    Each pixel gets the length of the motion segment ``[-length/2, length/2]`` that falls in
    its 1-px footprint along the motion direction, times a 1-px tent across it (the usual
    anti-aliased line). At 0 and 90 degrees an integer length covers exactly that many pixels;
    fractional lengths give partial end pixels.

    Args:
        length: motion during the exposure, pixels, >= 0 (0 gives the identity kernel).
        angle_deg: motion direction in degrees, 0 = horizontal, counter-clockwise.
        dtype: dtype of the returned kernel.

    Returns:
        Tensor of shape ``(k, k)`` with odd ``k`` (``length + 1`` to ``length + 4``),
        summing to 1.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if length <= 1e-6:
        return torch.ones(1, 1, dtype=dtype)
    half = math.ceil(length / 2 + 1.5)
    x, y = _offset_grid(2 * half + 1, torch.float64)
    angle = math.radians(angle_deg)
    # Rounded so that axis-aligned motion gives exactly zero off-axis weights.
    cos, sin = round(math.cos(angle), 12), round(math.sin(angle), 12)
    along = x * cos + y * sin
    across = -x * sin + y * cos
    overlap = torch.clamp(along + 0.5, max=length / 2) - torch.clamp(along - 0.5, min=-length / 2)
    kernel = overlap.clamp(min=0) * (1 - across.abs()).clamp(min=0)
    # Drop all-zero outer rings (the sizing above is generous at oblique angles).
    while kernel.shape[0] > 1:
        ring = torch.cat([kernel[0], kernel[-1], kernel[:, 0], kernel[:, -1]])
        if ring.any():
            break
        kernel = kernel[1:-1, 1:-1]
    return (kernel / kernel.sum()).to(dtype)


def motion_blur(x: torch.Tensor, length: float, angle_deg: float) -> torch.Tensor:
    """Blur by uniform linear motion of ``length`` pixels at ``angle_deg`` during the exposure.

    Args:
        x: images, shape ``(B, C, H, W)``, values in [0, 1].
        length: motion extent in pixels, >= 0 (0 returns the input; 3-40 px is the
            useful range on 640x480 frames).
        angle_deg: motion direction, degrees, 0 = horizontal, counter-clockwise.

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1]; differentiable in ``x``.
    """
    kernel = motion_kernel2d(length, angle_deg, dtype=x.dtype)
    if kernel.shape[-1] == 1:
        return x.clone()
    return convolve2d(x, kernel).clamp(0.0, 1.0)
