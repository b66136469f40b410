"""Quality metrics of a fused image F against its infrared (A) and visible (B) sources.

The conventions are those of ``utils/Evaluator.py`` in MMIF-CDDFuse (Zhao et al., CVPR 2023), the
evaluator most infrared-visible fusion papers copy, so that numbers are comparable with published
tables. Each function documents its convention; the shared ones are:

* Inputs are numpy arrays (H, W) or (H, W, 3) RGB, uint8 or float in 0..255.
* A colour image is reduced to 8-bit luma exactly as CDDFuse's reader does (:func:`to_luma`); a
  gray image is used as it is (a float gray image is not rounded).
* Histogram metrics (EN, MI) round and clip to the 256 integer levels.

Besides the eleven fusion metrics (:data:`METRIC_NAMES`), :func:`evaluate_fusion` adds PSNR, SSIM and
LPIPS against a reference image when one is given, and the no-reference NIQE. LPIPS needs the
ImageNet weights of its backbone from a local file: nothing here downloads anything.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
from scipy.ndimage import correlate1d
from scipy.signal import convolve2d
from skimage.metrics import structural_similarity

from .lpips_backbone import (LPIPS_BACKBONE_ENV, LPIPSBackboneNotFoundError, load_lpips,  # noqa: F401
                             resolve_lpips_backbone)

METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "CC", "PSNR")

# Xydeas & Petrovic (2000) sigmoid constants for edge strength (g) and orientation (a) preservation.
_QABF_GAMMA_G, _QABF_KAPPA_G, _QABF_SIGMA_G = 0.9994, -15.0, 0.5
_QABF_GAMMA_A, _QABF_KAPPA_A, _QABF_SIGMA_A = 0.9879, -22.0, 0.8
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
_NIQE_BLOCK = 96  # basicsr's NIQE cuts the image into 96x96 blocks and needs at least two of them
# The smallest side on which every metric but NIQE is computed in full: VIF's coarsest scale
# (after 'valid' 9-, 5- and 3-tap filtering, each with 2x decimation, then its own 3-tap window) keeps a pixel
# only from 41 pixels on. SSIM's 7x7 window, the gradients and LPIPS's AlexNet (31) need less.
MIN_SIDE = 41


def to_luma(image: np.ndarray) -> np.ndarray:
    """The (H, W) float64 image every metric works on.

    A colour (H, W, 3) RGB image becomes 8-bit luma ``round(0.299 R + 0.587 G + 0.114 B)`` computed the
    way CDDFuse's reader computes it: ``cv2.cvtColor(float32 image, COLOR_RGB2GRAY)`` then
    ``np.round``. OpenCV's float32 path evaluates ``fma(B, .114, fma(R, .299, G * .587))`` in float32,
    and rounding after it differs from the exact formula on about one colour in 15 000 (ties at .5);
    the float32 steps are reproduced here and match OpenCV on all 2^24 8-bit colours. (OpenCV's uint8
    path uses 14-bit fixed point and disagrees on ~0.1% of colours; CDDFuse does not use it.)
    A gray (H, W) or (H, W, 1) image is converted to float64 unchanged.
    """
    array = np.asarray(image)
    if not (array.dtype == np.uint8 or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"expected a uint8 or float image in 0..255, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return array.astype(np.float64)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    red, green, blue = (array[..., c].astype(np.float32) for c in range(3))

    def fma32(a: np.ndarray, b: float, c: np.ndarray) -> np.ndarray:
        # float32 x float32 is exact in float64, so this is a fused multiply-add rounded once to float32.
        return (a.astype(np.float64) * float(np.float32(b)) + c.astype(np.float64)).astype(np.float32)

    luma = fma32(blue, 0.114, fma32(red, 0.299, green * np.float32(0.587)))
    return np.round(luma).astype(np.float64)


def _gray_levels(image: np.ndarray) -> np.ndarray:
    """Integer levels 0..255 of an image, for histograms."""
    return np.clip(np.round(to_luma(image)), 0, 255).astype(np.intp)


def _check_same_shape(**images: np.ndarray) -> None:
    shapes = {name: image.shape for name, image in images.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError("images differ in size: " + ", ".join(f"{n} {h}x{w}" for n, (h, w) in shapes.items()))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either image is constant."""
    dx, dy = x - x.mean(), y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(dx * dy) / np.sqrt(np.sum(dx * dx) * np.sum(dy * dy)))


def entropy(image: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin histogram of the image rounded to integer levels."""
    counts = np.bincount(_gray_levels(image).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def standard_deviation(image: np.ndarray) -> float:
    """SD: population standard deviation (divisor N) of the pixel values."""
    return float(np.std(to_luma(image)))


def spatial_frequency(image: np.ndarray) -> float:
    """SF: ``sqrt(mean(dx^2) + mean(dy^2))`` with forward differences between neighbouring pixels
    (no padding: each mean is over the (H, W-1) or (H-1, W) differences)."""
    x = to_luma(image)
    return float(np.sqrt(np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=0) ** 2)))


def average_gradient(image: np.ndarray) -> float:
    """AG: mean of ``sqrt((gx^2 + gy^2) / 2)`` with central differences inside the image and one-sided
    differences on its border (``np.gradient``)."""
    gy, gx = np.gradient(to_luma(image))
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


def _mutual_information_pair(x: np.ndarray, y: np.ndarray) -> float:
    joint = np.bincount((x * 256 + y).ravel(), minlength=256 * 256).reshape(256, 256).astype(np.float64)
    joint /= joint.sum()
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / np.outer(px, py)[nonzero])))


def mutual_information(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """MI: ``MI(F, A) + MI(F, B)`` in nats, each from the 256x256 joint histogram of the images rounded
    to integer levels (what ``sklearn.metrics.mutual_info_score`` gives CDDFuse on 8-bit images)."""
    f, a, b = _gray_levels(fused), _gray_levels(ir), _gray_levels(vi)
    _check_same_shape(fused=f, ir=a, vi=b)
    return _mutual_information_pair(f, a) + _mutual_information_pair(f, b)


def sum_of_correlations_of_differences(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """SCD (Aslantas & Bendes 2015): ``corr(A, F - B) + corr(B, F - A)`` with Pearson correlations.
    NaN when a source or a difference image is constant."""
    f, a, b = to_luma(fused), to_luma(ir), to_luma(vi)
    _check_same_shape(fused=f, ir=a, vi=b)
    return _pearson(a, f - b) + _pearson(b, f - a)


def correlation_coefficient(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """CC: mean of the Pearson correlations ``(corr(A, F) + corr(B, F)) / 2``. NaN for a constant image."""
    f, a, b = to_luma(fused), to_luma(ir), to_luma(vi)
    _check_same_shape(fused=f, ir=a, vi=b)
    return (_pearson(a, f) + _pearson(b, f)) / 2.0


def psnr_fusion(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """PSNR: ``10 log10(max(F)^2 / ((MSE(F, A) + MSE(F, B)) / 2))`` in dB. The peak is the fused image's
    own maximum, not 255, as in CDDFuse. ``inf`` when F equals both sources."""
    f, a, b = to_luma(fused), to_luma(ir), to_luma(vi)
    _check_same_shape(fused=f, ir=a, vi=b)
    mse = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0
    if mse == 0:
        return math.inf
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(np.max(f) ** 2 / mse))


def _ssim_cddfuse(x: np.ndarray, y: np.ndarray) -> float:
    # data_range=2: CDDFuse calls skimage.metrics.structural_similarity(F, A) on float32 images in 0..255
    # without data_range; scikit-image up to 0.19 then takes the range of the dtype, which for floats is
    # [-1, 1] (0.20 made this an error), so C1 = (0.01 * 2)^2 and C2 = (0.03 * 2)^2, negligible next to
    # 8-bit statistics.
    return float(structural_similarity(x, y, win_size=7, data_range=2.0, gaussian_weights=False,
                                       use_sample_covariance=True))


def ssim_fusion(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """SSIM: ``SSIM(F, A) + SSIM(F, B)`` (so at most 2) as scikit-image 0.19 computes it for CDDFuse:
    7x7 uniform window, sample covariance (divisor 48), reflect-padded filtering with the 3-pixel border
    of the SSIM map dropped before averaging, K1 = 0.01, K2 = 0.03 and data range 2 (the default for
    float images in scikit-image <= 0.19; CDDFuse's images are float32 in 0..255). Computed in float64
    here, CDDFuse ran it in float32 (differences ~1e-7). Needs images of at least 7x7."""
    f, a, b = to_luma(fused), to_luma(ir), to_luma(vi)
    _check_same_shape(fused=f, ir=a, vi=b)
    return _ssim_cddfuse(f, a) + _ssim_cddfuse(f, b)


def _gaussian_window(size: int) -> np.ndarray:
    """1-D factor of the normalised ``size`` x ``size`` Gaussian with sigma ``size / 5`` (separable: no
    2-D tap falls below MATLAB's eps cut-off for the sizes used)."""
    x = np.arange(size) - (size - 1) / 2.0
    window = np.exp(-(x * x) / (2.0 * (size / 5.0) ** 2))
    return window / window.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable filtering keeping only outputs whose window lies inside the image (MATLAB 'valid');
    the window is symmetric, so correlation equals convolution."""
    half = len(window) // 2
    filtered = correlate1d(correlate1d(image, window, axis=1), window, axis=0)
    return filtered[half:image.shape[0] - half, half:image.shape[1] - half]


def _pixel_vif(reference: np.ndarray, distorted: np.ndarray, noise_variance: float = 2.0,
               eps: float = 1e-10) -> float:
    """VIFp (Sheikh & Bovik 2006) of ``distorted`` against ``reference``: four scales with Gaussian windows
    of 17, 9, 5, 3 taps (sigma = taps / 5), 'valid' filtering and 2x decimation between scales, the
    MATLAB vifvec clamps on the gain and residual variance, and 1.0 when the reference has no variance."""
    numerator = denominator = 0.0
    for scale in range(1, 5):
        window = _gaussian_window(2 ** (5 - scale) + 1)
        if scale > 1:
            reference = _filter_valid(reference, window)[::2, ::2]
            distorted = _filter_valid(distorted, window)[::2, ::2]
        mu_r, mu_d = _filter_valid(reference, window), _filter_valid(distorted, window)
        var_r = np.maximum(_filter_valid(reference * reference, window) - mu_r * mu_r, 0.0)
        var_d = np.maximum(_filter_valid(distorted * distorted, window) - mu_d * mu_d, 0.0)
        covariance = _filter_valid(reference * distorted, window) - mu_r * mu_d

        gain = covariance / (var_r + eps)
        residual = var_d - gain * covariance
        flat_reference = var_r < eps
        gain[flat_reference] = 0.0
        residual[flat_reference] = var_d[flat_reference]
        var_r[flat_reference] = 0.0
        flat_distorted = var_d < eps
        gain[flat_distorted] = 0.0
        residual[flat_distorted] = 0.0
        negative_gain = gain < 0
        residual[negative_gain] = var_d[negative_gain]
        gain[negative_gain] = 0.0
        residual = np.maximum(residual, eps)

        numerator += np.sum(np.log10(1.0 + gain * gain * var_r / (residual + noise_variance)))
        denominator += np.sum(np.log10(1.0 + var_r / noise_variance))
    return 1.0 if denominator == 0 else float(numerator / denominator)


def visual_information_fidelity(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIF: ``VIFp(A -> F) + VIFp(B -> F)``, the 4-scale pixel-domain VIF with noise variance
    sigma_n^2 = 2, each source as the reference and F as the distorted image (CDDFuse's VIFF).
    On images under :data:`MIN_SIDE` (41) pixels a side the coarsest scales are empty and add nothing;
    under 17 every scale is, and VIF is the constant 2."""
    f, a, b = to_luma(fused), to_luma(ir), to_luma(vi)
    _check_same_shape(fused=f, ir=a, vi=b)
    return _pixel_vif(a, f) + _pixel_vif(b, f)


def _edge_strength_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = convolve2d(image, _SOBEL_X, mode="same")
    gy = convolve2d(image, _SOBEL_Y, mode="same")
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = np.where(gx == 0, np.pi / 2, np.arctan(gy / gx))
    return np.hypot(gx, gy), orientation


def _edge_preservation(strength_s: np.ndarray, orientation_s: np.ndarray,
                       strength_f: np.ndarray, orientation_f: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        # Where the strengths are equal the reference code takes gF, not the ratio 1 (see qabf).
        relative_strength = np.where(strength_s == strength_f, strength_f,
                                     np.minimum(strength_s, strength_f) / np.maximum(strength_s, strength_f))
    relative_orientation = 1.0 - np.abs(orientation_s - orientation_f) / (np.pi / 2)
    q_strength = _QABF_GAMMA_G / (1.0 + np.exp(_QABF_KAPPA_G * (relative_strength - _QABF_SIGMA_G)))
    q_orientation = _QABF_GAMMA_A / (1.0 + np.exp(_QABF_KAPPA_A * (relative_orientation - _QABF_SIGMA_A)))
    return q_strength * q_orientation


def qabf(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Qabf (Xydeas & Petrovic 2000): edge information transferred from A and B into F.

    Edge strength g and orientation alpha = arctan(gy / gx) (pi/2 where gx = 0) come from 3x3 Sobel
    filters with zero padding (so the image frame counts as an edge). Per source S, relative strength
    G = min(gS, gF) / max(gS, gF) and orientation A = 1 - |alphaS - alphaF| / (pi/2) pass through
    sigmoids Gamma / (1 + exp(kappa (x - sigma))) with Gamma_g = 0.9994, kappa_g = -15, sigma_g = 0.5,
    Gamma_a = 0.9879, kappa_a = -22, sigma_a = 0.8;
    Q_SF is their product and Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB) (weights g^L, L = 1).
    Kept for comparability with published tables: where gS == gF, CDDFuse (like the MATLAB Qabf it
    ports) sets G = gF instead of the ratio 1. Pixels with gS == gF == 0 carry no weight; elsewhere on
    8-bit images gF >= 1, so the quirk raises Q there by at most 6e-4 (G = 1 and G = 2 give sigmoid
    values 0.99945 and 1 - 2e-10). It matters only where F copies a source's edges: max fusion of an
    MSRS pair scores ~3e-4 higher than with G = 1. Hence a perfect copy F = A = B scores between
    Gamma_g Gamma_a / ((1 + e^-7.5)(1 + e^-4.4)) ~= 0.9748 and Gamma_g Gamma_a / (1 + e^-4.4) ~= 0.9753,
    not 1. NaN when both sources are constant.
    """
    f, a, b = to_luma(fused), to_luma(ir), to_luma(vi)
    _check_same_shape(fused=f, ir=a, vi=b)
    strength_f, orientation_f = _edge_strength_orientation(f)
    strength_a, orientation_a = _edge_strength_orientation(a)
    strength_b, orientation_b = _edge_strength_orientation(b)
    q_af = _edge_preservation(strength_a, orientation_a, strength_f, orientation_f)
    q_bf = _edge_preservation(strength_b, orientation_b, strength_f, orientation_f)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(q_af * strength_a + q_bf * strength_b) / np.sum(strength_a + strength_b))


def psnr_reference(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR_ref: the usual ``10 log10(255^2 / MSE)`` in dB of the luma images; ``inf`` when equal."""
    x, r = to_luma(image), to_luma(reference)
    _check_same_shape(image=x, reference=r)
    mse = np.mean((x - r) ** 2)
    return math.inf if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def ssim_reference(image: np.ndarray, reference: np.ndarray) -> float:
    """SSIM_ref: scikit-image SSIM of the luma images with the correct data range 255 (unlike the fusion
    SSIM), 7x7 uniform window and sample covariance."""
    x, r = to_luma(image), to_luma(reference)
    _check_same_shape(image=x, reference=r)
    return float(structural_similarity(x, r, win_size=7, data_range=255.0, gaussian_weights=False,
                                       use_sample_covariance=True))


def niqe(image: np.ndarray) -> float:
    """NIQE (Mittal et al. 2013; lower is better) of the luma image, with basicsr 1.4.2's implementation
    and the official pristine-model parameters it ships (``niqe_pris_params.npz``): 96x96 blocks
    without overlap, two scales, pixels rounded to integers first. basicsr's own colour path would use
    MATLAB's studio-range Y; here colour images go through :func:`to_luma` like every other metric.
    Needs at least two 96x96 blocks (192x96 or 96x192 pixels)."""
    from ._compat import import_basicsr

    y = to_luma(image)
    height, width = y.shape
    if (height // _NIQE_BLOCK) * (width // _NIQE_BLOCK) < 2:
        raise ValueError(f"NIQE needs at least two {_NIQE_BLOCK}x{_NIQE_BLOCK} blocks (e.g. "
                         f"{2 * _NIQE_BLOCK}x{_NIQE_BLOCK}), but the image is {width}x{height}")
    import_basicsr()
    from basicsr.metrics.niqe import calculate_niqe

    return float(calculate_niqe(y, crop_border=0, input_order="HW"))


# One model per (backbone file, net), loaded on first use.
_lpips_model = functools.lru_cache(maxsize=2)(load_lpips)


def lpips_model(backbone_path: str | os.PathLike | None = None, net: str = "alex"):
    """The LPIPS network of :func:`lpips_distance`, its backbone from ``backbone_path`` or
    ``$ALLINONE_LPIPS_BACKBONE``, loaded once per file. Raises LPIPSBackboneNotFoundError when that file is
    absent and ValueError when it does not hold the backbone's weights."""
    return _lpips_model(str(resolve_lpips_backbone(backbone_path, net).resolve()), net)


def _lpips_input(image: np.ndarray, colour: bool):
    import torch

    array = np.asarray(image, dtype=np.float64)
    rgb = array if colour else np.repeat(to_luma(image)[..., np.newaxis], 3, axis=-1)
    return torch.from_numpy(rgb / 127.5 - 1.0).float().permute(2, 0, 1).unsqueeze(0)


def lpips_distance(image: np.ndarray, reference: np.ndarray, backbone_path: str | os.PathLike | None = None,
                   net: str = "alex") -> float:
    """LPIPS v0.1 (Zhang et al. 2018; lower is better) between ``image`` and ``reference``.

    The lpips package ships the linear heads, but its backbone (torchvision AlexNet for ``net='alex'``,
    VGG16 for ``'vgg'``) would be downloaded from the internet; here it is read from ``backbone_path``
    or ``$ALLINONE_LPIPS_BACKBONE`` (a torchvision state dict with ``features.<i>.*`` keys) and
    LPIPSBackboneNotFoundError is raised when that file is absent. RGB when both images are colour,
    otherwise the luma replicated to three channels; pixels mapped from 0..255 to [-1, 1].
    """
    import torch

    model = lpips_model(backbone_path, net)
    colour = all(np.ndim(x) == 3 and np.shape(x)[-1] == 3 for x in (image, reference))
    x, r = _lpips_input(image, colour), _lpips_input(reference, colour)
    if x.shape != r.shape:
        raise ValueError(f"images differ in size: image {tuple(x.shape[-2:])}, reference {tuple(r.shape[-2:])}")
    with torch.inference_mode():
        return float(model(x, r).item())


def evaluate_fusion(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, ref: np.ndarray | None = None, *,
                    compute_niqe: bool = True, lpips_backbone: str | os.PathLike | None = None) -> dict[str, float]:
    """All metrics of one fused image, keyed by name in the order
    :data:`METRIC_NAMES`, then (with ``ref``) PSNR_ref, SSIM_ref and, when ``lpips_backbone`` or
    ``$ALLINONE_LPIPS_BACKBONE`` is set, LPIPS, then NIQE unless ``compute_niqe`` is False.

    ``fused``, ``ir``, ``vi`` and ``ref``: (H, W) or (H, W, 3) RGB, uint8 or float in 0..255, all the
    same size. Higher is better except for LPIPS and NIQE.
    """
    f, a, b = to_luma(fused), to_luma(ir), to_luma(vi)
    _check_same_shape(fused=f, ir=a, vi=b)
    scores = {
        "EN": entropy(f), "SD": standard_deviation(f), "SF": spatial_frequency(f), "AG": average_gradient(f),
        "MI": mutual_information(f, a, b),
        "SCD": sum_of_correlations_of_differences(f, a, b),
        "VIF": visual_information_fidelity(f, a, b),
        "Qabf": qabf(f, a, b),
        "SSIM": ssim_fusion(f, a, b),
        "CC": correlation_coefficient(f, a, b),
        "PSNR": psnr_fusion(f, a, b),
    }
    if ref is not None:
        scores["PSNR_ref"] = psnr_reference(fused, ref)
        scores["SSIM_ref"] = ssim_reference(fused, ref)
        if lpips_backbone is not None or os.environ.get(LPIPS_BACKBONE_ENV):
            scores["LPIPS"] = lpips_distance(fused, ref, lpips_backbone)
    elif lpips_backbone is not None:
        raise ValueError("LPIPS compares against a reference image: pass ref")
    if compute_niqe:
        scores["NIQE"] = niqe(f)
    return scores
