"""convolve2d (direct and FFT paths), Gaussian and motion kernels and blurs."""
import math

import pytest
import torch

from degradations.blur import gaussian_blur, gaussian_kernel2d, motion_blur, motion_kernel2d
from degradations.filtering import convolve2d


def _moments(kernel: torch.Tensor) -> tuple[float, float, float, float, float]:
    """Mean (x, y) and covariance (xx, yy, xy) of a kernel; x to the right, y upwards."""
    k = kernel.shape[-1]
    r = torch.arange(k, dtype=torch.float64) - k // 2
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    x, y, w = cols, -rows, kernel.double() / kernel.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    xx = (w * (x - mx) ** 2).sum()
    yy = (w * (y - my) ** 2).sum()
    xy = (w * (x - mx) * (y - my)).sum()
    return mx.item(), my.item(), xx.item(), yy.item(), xy.item()


def _high_frequency_energy(x: torch.Tensor) -> float:
    return (x.diff(dim=-1).square().mean() + x.diff(dim=-2).square().mean()).item()


@pytest.mark.parametrize("k", [3, 8, 15, 31])
def test_fft_and_direct_paths_agree(k):
    g = torch.Generator().manual_seed(k)
    x = torch.rand(2, 3, 37, 53, generator=g)
    kernel = torch.rand(k, k, generator=g)  # asymmetric: catches a missing flip
    kernel /= kernel.sum()
    direct = convolve2d(x, kernel, method="direct")
    fft = convolve2d(x, kernel, method="fft")
    assert direct.shape == x.shape
    torch.testing.assert_close(fft, direct, atol=1e-5, rtol=0)


def test_per_image_kernels_match_separate_calls():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, generator=g)
    kernels = torch.rand(2, 5, 5, generator=g)
    for method in ("direct", "fft"):
        out = convolve2d(x, kernels, method=method)
        for i in range(2):
            torch.testing.assert_close(out[i : i + 1], convolve2d(x[i : i + 1], kernels[i], method=method))


def test_convolution_is_a_true_convolution_centred_at_k_over_2():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    kernel = torch.arange(9.0).reshape(3, 3)
    for method in ("direct", "fft"):
        out = convolve2d(x, kernel, method=method)
        # The response to a centred impulse is the kernel itself, unflipped.
        torch.testing.assert_close(out[0, 0, 3:6, 3:6], kernel, atol=1e-5, rtol=0)


def test_identity_kernel_and_kernel_larger_than_image():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 5, 7, generator=g)
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1
    torch.testing.assert_close(convolve2d(x, delta), x)
    big = torch.full((21, 21), 1 / 441)  # larger than the image: replicate padding
    for method in ("direct", "fft"):
        out = convolve2d(x, big, method=method)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert x.min() - 1e-6 <= out.min() and out.max() <= x.max() + 1e-6
    torch.testing.assert_close(convolve2d(x, big, method="fft"), convolve2d(x, big, method="direct"))


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_convolve2d_gradcheck(method):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    kernel = torch.rand(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: convolve2d(a, b, method=method), (x, kernel))


def test_gaussian_kernel_sums_to_one_and_default_size():
    kernel = gaussian_kernel2d(2.0, 0.7, 0.3)
    assert kernel.shape == (13, 13)  # 2 * ceil(3 * 2) + 1
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert kernel.min() >= 0


@pytest.mark.parametrize("theta", [0.0, 0.5, math.pi / 2, 2.0])
def test_gaussian_kernel_is_rotated_by_theta(theta):
    sx, sy = 3.0, 1.0
    kernel = gaussian_kernel2d(sx, sy, theta, size=41, dtype=torch.float64)
    mx, my, xx, yy, xy = _moments(kernel)
    c, s = math.cos(theta), math.sin(theta)
    # Covariance R diag(sx^2, sy^2) R^T of the rotated Gaussian.
    assert mx == pytest.approx(0, abs=1e-9) and my == pytest.approx(0, abs=1e-9)
    assert xx == pytest.approx(c * c * sx**2 + s * s * sy**2, rel=0.02)
    assert yy == pytest.approx(s * s * sx**2 + c * c * sy**2, rel=0.02)
    assert xy == pytest.approx(c * s * (sx**2 - sy**2), abs=0.05)


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 30.0])
@pytest.mark.parametrize("length", [9.0, 15.5])
def test_motion_kernel_extent_along_and_across(length, angle):
    kernel = motion_kernel2d(length, angle, dtype=torch.float64)
    k = kernel.shape[-1]
    assert k % 2 == 1
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-9)
    mx, my, xx, yy, xy = _moments(kernel)
    assert abs(mx) < 1e-9 and abs(my) < 1e-9
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    var_along = c * c * xx + s * s * yy + 2 * c * s * xy
    var_across = s * s * xx + c * c * yy - 2 * c * s * xy
    # A uniform segment of length L has variance L^2 / 12.
    assert math.sqrt(12 * var_along) == pytest.approx(length, abs=1.0)
    assert math.sqrt(var_across) < 0.5


def test_motion_kernel_axis_aligned_is_exact():
    horizontal = motion_kernel2d(5, 0)
    assert horizontal.shape == (5, 5)
    torch.testing.assert_close(horizontal[2], torch.full((5,), 0.2))
    assert horizontal.sum() == pytest.approx(horizontal[2].sum().item())
    torch.testing.assert_close(motion_kernel2d(5, 90), horizontal.T)
    assert motion_kernel2d(0, 30).shape == (1, 1)
    # 45 degrees counter-clockwise: the weight sits on the anti-diagonal (up and to the right).
    diagonal = motion_kernel2d(7, 45)
    c = diagonal.shape[-1] // 2
    assert diagonal[c - 2, c + 2] > 0.1 and diagonal[c + 2, c - 2] > 0.1
    assert diagonal[c - 2, c - 2] == 0 and diagonal[c + 2, c + 2] == 0


@pytest.mark.parametrize(
    "blur",
    [
        lambda x: gaussian_blur(x, 1.5),
        lambda x: gaussian_blur(x, 3.0, 0.8, 0.7),
        lambda x: motion_blur(x, 11.0, 30.0),
    ],
    ids=["isotropic", "anisotropic", "motion"],
)
def test_blur_keeps_mean_and_removes_high_frequencies(blur):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 64, 80, generator=g)
    out = blur(x)
    assert out.shape == x.shape
    assert (out.mean() - x.mean()).abs().item() < 1e-3
    assert _high_frequency_energy(out) < 0.3 * _high_frequency_energy(x)


def test_motion_blur_smears_along_its_direction_only():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 1, 64, 64, generator=g)
    out = motion_blur(x, 9.0, 0.0)
    along = out.diff(dim=-1).square().mean()
    across = out.diff(dim=-2).square().mean()
    # A 9-px box divides the variance of horizontal differences by ~9.
    assert along < 0.2 * across


def test_zero_blur_is_identity_and_large_sigma_on_small_image_works():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 3, 6, 5, generator=g)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    assert torch.equal(motion_blur(x, 0.0, 10.0), x)
    out = gaussian_blur(x, 4.0)  # kernel 25x25 > image: replicate padding
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "blur",
    [
        lambda x: gaussian_blur(x, 1.0),
        lambda x: gaussian_blur(x, 1.2, 0.6, 0.4),
        lambda x: motion_blur(x, 3.5, 20.0),
    ],
    ids=["isotropic", "anisotropic", "motion"],
)
def test_blur_gradcheck(blur):
    g = torch.Generator().manual_seed(6)
    # Kept away from 0 and 1 so the final clamp is inactive.
    x = (0.25 + 0.5 * torch.rand(1, 2, 9, 11, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(blur, (x,))
