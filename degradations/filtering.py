"""2-D convolution of image batches with a same-size output, by direct or FFT convolution.

Blur, motion and rain kernels range from 3x3 to well over 50x50 pixels. Direct convolution
costs O(k^2) per pixel and FFT convolution O(log HW), so small kernels go through
``F.conv2d`` and large ones through ``torch.fft``; both compute the same true convolution
of the border-padded image and agree to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# From this kernel size on the FFT path is as fast or faster (one CPU core, 640x480 RGB or IR
# frames and batches of 128x128 crops: direct depthwise conv2d grows as k^2, ~8 ms at 9x9 on
# an RGB frame, while the FFT stays at ~3 ms per channel once its length is 5-smooth).
FFT_MIN_KERNEL_SIZE = 9


def _fft_size(n: int) -> int:
    """Smallest integer >= n with no prime factor above 5 (fast for pocketfft/cuFFT)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _pad(x: torch.Tensor, k: int) -> torch.Tensor:
    """Pad H and W so a k x k 'valid' convolution returns the input size.

    Reflect padding keeps local statistics at the border; it needs the padding to be smaller
    than the image, so kernels as large as the image fall back to replicate padding.
    """
    before, after = (k - 1) // 2, k // 2
    mode = "reflect" if max(before, after) < min(x.shape[-2:]) else "replicate"
    return F.pad(x, (before, after, before, after), mode=mode)


def convolve2d(x: torch.Tensor, kernel: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Convolve every channel of ``x`` with a square kernel; the output has the input size.

    This is the true convolution ``y[i, j] = sum_{u, v} K[u, v] x[i - u + c, j - v + c]``
    with the kernel centre ``c = k // 2`` (so a kernel with a single 1 at its centre is the
    identity), computed on the reflect-padded image (replicate padding when the kernel is
    as large as the image). The output is not clamped: a non-negative kernel summing to 1
    keeps [0, 1] images in [0, 1] by itself, and other kernels may legitimately leave it.

    Args:
        x: images, shape ``(B, C, H, W)``, float.
        kernel: shape ``(k, k)`` (shared by the batch) or ``(B, k, k)`` (one per image),
            applied identically to every channel. Cast to ``x``'s dtype and device.
        method: ``"direct"`` (``F.conv2d``), ``"fft"`` (``torch.fft.rfft2``), or ``"auto"``:
            FFT when ``k >= FFT_MIN_KERNEL_SIZE``.

    Returns:
        Tensor of shape ``(B, C, H, W)``, same dtype as ``x``. Differentiable in ``x`` and
        ``kernel`` on both paths.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if kernel.ndim not in (2, 3) or kernel.shape[-1] != kernel.shape[-2]:
        raise ValueError(f"kernel must be (k, k) or (B, k, k), got shape {tuple(kernel.shape)}")
    if kernel.ndim == 3 and kernel.shape[0] != x.shape[0]:
        raise ValueError(f"got {kernel.shape[0]} kernels for a batch of {x.shape[0]}")
    if method not in ("auto", "direct", "fft"):
        raise ValueError(f"method must be 'auto', 'direct' or 'fft', got {method!r}")
    b, c, h, w = x.shape
    k = kernel.shape[-1]
    kernel = kernel.to(dtype=x.dtype, device=x.device)
    if method == "auto":
        method = "fft" if k >= FFT_MIN_KERNEL_SIZE else "direct"
    padded = _pad(x, k)

    if method == "direct":
        # conv2d is a cross-correlation: flip the kernel to convolve.
        weight = kernel.flip(-1, -2).reshape(-1, 1, k, k)
        if kernel.ndim == 2:
            weight = weight.expand(c, 1, k, k)
        else:  # one group per (image, channel): fold the batch into the channel axis
            weight = weight.repeat_interleave(c, dim=0)
            padded = padded.reshape(1, b * c, h + k - 1, w + k - 1)
        # Depthwise convolution is several times faster in channels-last layout on CPU.
        padded = padded.contiguous(memory_format=torch.channels_last)
        out = F.conv2d(padded, weight, groups=weight.shape[0])
        return out.contiguous().reshape(b, c, h, w)

    # Circular convolution of the padded image with the zero-extended kernel; output index
    # i + k - 1 only ever reads padded samples i .. i + k - 1, so nothing wraps around.
    size = (_fft_size(h + k - 1), _fft_size(w + k - 1))
    spectrum = torch.fft.rfft2(padded, s=size)
    kernel_spectrum = torch.fft.rfft2(kernel, s=size)
    if kernel.ndim == 3:
        kernel_spectrum = kernel_spectrum.unsqueeze(1)
    out = torch.fft.irfft2(spectrum * kernel_spectrum, s=size)
    return out[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w].contiguous()
