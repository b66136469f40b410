"""Illumination-aware loss terms for joint restoration + fusion of IR and VIS images.

The model fuses a (possibly degraded) IR image ``(B, 1, H, W)`` and VIS image ``(B, 3, H, W)``
into a fused RGB image ``(B, 3, H, W)``, all float in ``[0, 1]``. It works in YCbCr (fused Y,
restored CbCr), so most terms act on luminance ``Y`` ``(B, 1, H, W)``. The fusion targets are
always the CLEAN sources from the synthesizer, so minimising these terms on degraded inputs
teaches restoration and fusion at once.

Every term is a pure function returning a scalar (mean over the batch) by default, or the
per-image values ``(B,)`` with ``reduction="none"`` so :class:`FusionLoss` can weight each
sample by its own degradation labels (see :mod:`allinone.loss_config`).
"""
from __future__ import annotations

import logging
import math
import os

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from allinone.loss_config import TERMS, LossWeights
from allinone.lpips_backbone import load_lpips, resolve_lpips_backbone

logger = logging.getLogger(__name__)


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _image_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension: ``(B, ...) -> (B,)``."""
    return x.flatten(1).mean(dim=1)


def _per_image_weight(weight: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A float or a ``(B,)``/``(B, 1, 1, 1)`` weight as a vector that broadcasts against ``(B,)``."""
    return torch.as_tensor(weight, dtype=like.dtype, device=like.device).reshape(-1)


def rgb_to_y_cbcr(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an RGB image ``(B, 3, H, W)`` into luminance ``(B, 1, H, W)`` and chroma ``(B, 2, H, W)``.

    Uses the full-range BT.601 YCbCr of :func:`kornia.color.rgb_to_ycbcr` (Y, Cb, Cr in
    ``[0, 1]``, Cb = Cr = 0.5 for grey), the same space the fusion model predicts in.
    """
    ycbcr = kornia.color.rgb_to_ycbcr(rgb)
    return ycbcr[:, :1], ycbcr[:, 1:]


def illumination_weights(
    vis_rgb: torch.Tensor, midpoint: float = 0.25, temperature: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image source weights from the VIS illumination (a fixed stand-in for PIAFusion's classifier).

    PIAFusion trains a day/night classifier on the VIS image and weights the intensity loss
    by its probabilities. Here the day probability is a smooth function of the mean VIS
    luminance::

        p_day = sigmoid((mean(Y) - midpoint) / temperature),  w_vi = p_day,  w_ir = 1 - p_day

    The defaults separate the MSRS night (mean Y about 0.05-0.16) and day (0.33-0.49) images;
    LLVIP street-lit night scenes (about 0.23) land slightly on the IR side.

    Args:
        vis_rgb: VIS image ``(B, 3, H, W)`` (or grey ``(B, 1, H, W)``) in ``[0, 1]``.
        midpoint: mean luminance at which both sources get weight 0.5.
        temperature: width of the day/night transition in luminance units.

    Returns:
        ``(w_ir, w_vi)``, each ``(B, 1, 1, 1)`` in ``(0, 1)``, summing to 1 per image.
    """
    y = vis_rgb if vis_rgb.shape[1] == 1 else rgb_to_y_cbcr(vis_rgb)[0]
    p_day = torch.sigmoid((y.mean(dim=(1, 2, 3), keepdim=True) - midpoint) / temperature)
    return 1.0 - p_day, p_day


def illumination_intensity_loss(
    fused_y: torch.Tensor,
    ir: torch.Tensor,
    vi_y: torch.Tensor,
    w_ir: float | torch.Tensor,
    w_vi: float | torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """PIAFusion illumination-aware intensity loss ``w_ir * L1(F, IR) + w_vi * L1(F, VIS_Y)``.

    At night (``w_ir`` large) the fused intensity follows the IR image, by day the VIS image.
    PIAFusion pairs this with an auxiliary max-intensity term, kept separate here as
    :func:`max_intensity_loss` so each has its own weight.

    Args:
        fused_y, ir, vi_y: ``(B, 1, H, W)`` fused luminance, IR, VIS luminance.
        w_ir, w_vi: floats or per-image ``(B, 1, 1, 1)`` weights (e.g. from :func:`illumination_weights`).
    """
    to_ir = _image_mean((fused_y - ir).abs())
    to_vi = _image_mean((fused_y - vi_y).abs())
    return _reduce(_per_image_weight(w_ir, fused_y) * to_ir + _per_image_weight(w_vi, fused_y) * to_vi, reduction)


def max_intensity_loss(
    fused_y: torch.Tensor, ir: torch.Tensor, vi_y: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """L1 between the fused luminance and the per-pixel max of the sources ``(B, 1, H, W)``.

    The auxiliary intensity loss of PIAFusion and the intensity loss of SeAFusion: it keeps
    salient (hot or bright) targets from either source at full intensity, independently of the
    global illumination weighting.
    """
    return _reduce(_image_mean((fused_y - torch.maximum(ir, vi_y)).abs()), reduction)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``|Gx| + |Gy|`` of the unnormalised 3x3 Sobel operator, as in SeAFusion; shape preserved."""
    return kornia.filters.spatial_gradient(image, mode="sobel", normalized=False).abs().sum(dim=2)


def _gradient_l1(fused_y: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    return _reduce(_image_mean((sobel_magnitude(fused_y) - target).abs()), reduction)


def max_gradient_loss(
    fused_y: torch.Tensor, ir: torch.Tensor, vi_y: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """SeAFusion texture loss ``L1(|grad F|, max(|grad IR|, |grad VIS_Y|))``, inputs ``(B, 1, H, W)``.

    The per-pixel strongest edge of either source is the texture target, so fine detail of
    both modalities survives fusion. ``|grad|`` is :func:`sobel_magnitude`.
    """
    return _gradient_l1(fused_y, torch.maximum(sobel_magnitude(ir), sobel_magnitude(vi_y)), reduction)


def max_image_gradient_loss(
    fused_y: torch.Tensor, ir: torch.Tensor, vi_y: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Texture loss ``L1(|grad F|, |grad max(IR, VIS_Y)|)``, inputs ``(B, 1, H, W)``.

    The edges of the per-pixel max image, the target of :func:`max_intensity_loss`, so the texture and
    intensity targets agree. With :func:`max_gradient_loss` they conflict wherever the weaker-intensity
    source has the stronger edge: leaves bright in the IR against a cold sky, under a bright daylight sky,
    ask for edges between two regions that the intensity target wants equally bright, and the network
    draws them by darkening the gaps (dark specks in foliage, IR wires as white lines across a VIS sky).
    IR detail still comes through wherever the IR is the brighter source.
    """
    return _gradient_l1(fused_y, sobel_magnitude(torch.maximum(ir, vi_y)), reduction)


# The SSIM data range of the evaluation convention (allinone.metrics.ssim_fusion: data range 2 on 0..255
# images) on this module's 0..1 scale. With it C2 is (0.06 / 255)^2: a window where one image varies by a
# grey level and the other is flat scores near 0, so the structure of flat and nearly flat regions counts
# (a third of the clean eval area), where L = 1 counts nothing below ~8 grey levels.
EVALUATION_SSIM_DATA_RANGE = 2.0 / 255.0

# FusionLoss's choices for the texture target of its "gradient" term.
GRADIENT_TARGETS = ("strongest_source", "max_image", "max_image_when_clean")


def check_fusion_loss_options(gradient_target: str, ssim_data_range: float) -> None:
    """Raise ValueError for a ``gradient_target`` or ``ssim_data_range`` that :class:`FusionLoss` cannot take
    (the training config calls it too, so a bad config fails when it is read, not when training starts)."""
    if gradient_target not in GRADIENT_TARGETS:
        raise ValueError(f"gradient_target must be one of {', '.join(GRADIENT_TARGETS)}, got {gradient_target!r}")
    if not ssim_data_range > 0:
        raise ValueError(f"ssim_data_range must be positive, got {ssim_data_range!r}")


def _ssim_dissimilarity(a: torch.Tensor, b: torch.Tensor, window_size: int, structure_only: bool = False,
                        data_range: float = 1.0) -> torch.Tensor:
    """Per-image ``1 - mean SSIM`` ``(B,)`` with a Gaussian window (sigma 1.5, reflect padding).

    The same map as ``kornia.metrics.ssim``, but the five local moments go through one separable
    Gaussian blur: 5x faster than kornia's 2D window, which dominated the training step on a CPU.
    ``structure_only`` drops the luminance factor and keeps contrast x structure (as MEF-SSIM does).
    ``data_range`` L sets the constants C1 = (0.01 L)^2, C2 = (0.03 L)^2; variations well below 0.03 L
    barely count (see :data:`EVALUATION_SSIM_DATA_RANGE`).
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    # The local (co)variances do not depend on the means, so take the moments of the images less their
    # means: with a small data range they must be resolved well below one 8-bit level squared (~1.5e-5),
    # and E[x^2] - E[x]^2 of uncentred values near 1 loses that to float32 rounding.
    mean_a, mean_b = a.mean(dim=(-2, -1), keepdim=True), b.mean(dim=(-2, -1), keepdim=True)
    a, b = a - mean_a, b - mean_b
    moments = kornia.filters.gaussian_blur2d(
        torch.cat([a, b, a * a, b * b, a * b], dim=1), (window_size, window_size), (1.5, 1.5), border_type="reflect")
    mu_a, mu_b, aa, bb, ab = moments.split(a.shape[1], dim=1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    ssim = (2 * cov + c2) / (var_a + var_b + c2)
    if not structure_only:
        mu_a, mu_b = mu_a + mean_a, mu_b + mean_b
        ssim = ssim * (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    return 1.0 - _image_mean(ssim)


def ssim_loss(
    fused_y: torch.Tensor,
    ir: torch.Tensor,
    vi_y: torch.Tensor,
    w_ir: float | torch.Tensor = 0.5,
    w_vi: float | torch.Tensor = 0.5,
    window_size: int = 11,
    structure_only: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted structural loss ``w_ir * (1 - SSIM(F, IR)) + w_vi * (1 - SSIM(F, VIS_Y))``.

    Args:
        fused_y, ir, vi_y: ``(B, 1, H, W)`` in ``[0, 1]``; H and W must exceed ``window_size // 2``.
        w_ir, w_vi: floats or per-image ``(B, 1, 1, 1)`` weights.
        window_size: side of the Gaussian SSIM window (sigma 1.5).
        structure_only: compare local contrast and structure only, not local means (MEF-SSIM's
            choice for fusion: the intensity terms decide the brightness, see :class:`FusionLoss`).
    """
    to_ir = _ssim_dissimilarity(fused_y, ir, window_size, structure_only)
    to_vi = _ssim_dissimilarity(fused_y, vi_y, window_size, structure_only)
    return _reduce(_per_image_weight(w_ir, fused_y) * to_ir + _per_image_weight(w_vi, fused_y) * to_vi, reduction)


def color_consistency_loss(
    fused_rgb: torch.Tensor, vi_rgb_clean: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """L1 between the CbCr chroma of the fused image and of the clean VIS image, both ``(B, 3, H, W)``.

    IR carries no colour, so the fused chroma should be the (restored) VIS chroma.
    """
    return _reduce(_image_mean((rgb_to_y_cbcr(fused_rgb)[1] - rgb_to_y_cbcr(vi_rgb_clean)[1]).abs()), reduction)


def exposure_control_loss(
    y: torch.Tensor, well_exposed: float = 0.6, patch: int = 16, reduction: str = "mean"
) -> torch.Tensor:
    """Zero-DCE exposure control: mean over non-overlapping patches of ``(patch mean - E)^2``.

    Args:
        y: luminance ``(B, 1, H, W)`` in ``[0, 1]`` with ``H, W >= patch``; trailing rows/columns
            that do not fill a whole patch are ignored.
        well_exposed: target exposure level ``E`` (Zero-DCE uses 0.6).
        patch: side of the square patches.
    """
    if min(y.shape[-2:]) < patch:
        raise ValueError(f"image {tuple(y.shape[-2:])} is smaller than the exposure patch {patch}")
    patch_means = F.avg_pool2d(y, kernel_size=patch, stride=patch)
    return _reduce(_image_mean((patch_means - well_exposed) ** 2), reduction)


def brightness_consistency_loss(
    fused_y: torch.Tensor, reference_y: torch.Tensor, grid: int = 8, reduction: str = "mean"
) -> torch.Tensor:
    """BA-Fusion-style brightness consistency: L1 between coarse ``grid x grid`` region means.

    Only the low-frequency brightness layout is compared (global level and its large-scale
    variation), so the fused image may add IR detail and contrast freely while its overall
    brightness stays that of the reference (the clean or enhanced VIS luminance).

    Args:
        fused_y, reference_y: ``(B, 1, H, W)`` luminance in ``[0, 1]``.
        grid: number of regions per side (adaptive average pooling, any H, W).
    """
    fused_regions = F.adaptive_avg_pool2d(fused_y, grid)
    reference_regions = F.adaptive_avg_pool2d(reference_y, grid)
    return _reduce(_image_mean((fused_regions - reference_regions).abs()), reduction)


def dark_region_mask(
    vi_y: torch.Tensor, threshold: float = 0.2, softness: float = 0.05, kernel_size: int = 7
) -> torch.Tensor:
    """Soft mask ``(B, 1, H, W)`` in ``(0, 1)`` of regions whose local mean luminance is below ``threshold``.

    ``sigmoid((threshold - box_mean(Y)) / softness)``: the local mean over ``kernel_size`` pixels
    makes it a region mask rather than a speckle of dark pixels (noise, texture).
    """
    local_mean = kornia.filters.box_blur(vi_y, kernel_size)
    return torch.sigmoid((threshold - local_mean) / softness)


def max_entropy_loss(
    fused_y: torch.Tensor, dark_mask: torch.Tensor, num_bins: int = 16, reduction: str = "mean"
) -> torch.Tensor:
    """LEFuse-style maximum-entropy enhancement of dark regions.

    A differentiable soft histogram of ``fused_y`` inside ``dark_mask``: each pixel spreads its
    unit mass over bins with centres ``(k + 0.5) / num_bins`` by a softmax of Gaussian affinities
    (bandwidth half a bin), weighted by the mask. With ``H`` the histogram entropy, the per-image
    loss is ``coverage * (1 - H / log(num_bins))``: 0 for a uniform spread of intensities, near 1
    for a single intensity (0.75-0.87 with this soft binning, which puts a constant image in one
    or two bins), scaled by ``coverage = mean(dark_mask)`` so images without dark regions
    contribute (almost) nothing. Memory is ``B * H * W * num_bins`` floats.

    Args:
        fused_y: fused luminance ``(B, 1, H, W)`` in ``[0, 1]``.
        dark_mask: weights ``(B, 1, H, W)`` in ``[0, 1]``, e.g. :func:`dark_region_mask` of the VIS Y.
        num_bins: histogram bins over ``[0, 1]``.
    """
    centres = (torch.arange(num_bins, dtype=fused_y.dtype, device=fused_y.device) + 0.5) / num_bins
    bandwidth = 0.5 / num_bins
    affinity = -((fused_y.flatten(1).unsqueeze(-1) - centres) ** 2) / (2 * bandwidth**2)
    membership = affinity.softmax(dim=-1)  # (B, N, K)
    mask = dark_mask.flatten(1)  # (B, N)
    mass = mask.sum(dim=1)
    histogram = torch.einsum("bn,bnk->bk", mask, membership) / mass.clamp_min(1e-12).unsqueeze(-1)
    # clamp inside the log only: empty bins add 0 to H and keep a finite gradient
    entropy = -(histogram * histogram.clamp_min(1e-12).log()).sum(dim=-1)
    coverage = mass / mask.shape[1]
    return _reduce(coverage * (1.0 - entropy / math.log(num_bins)), reduction)


def illumination_smoothness_loss(
    illum_map: torch.Tensor,
    guidance: torch.Tensor | None = None,
    edge_sensitivity: float = 10.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Total-variation smoothness of an illumination map (Zero-DCE / Retinex): ``mean|dx| + mean|dy|``.

    Args:
        illum_map: ``(B, C, H, W)`` illumination (or curve-parameter) map.
        guidance: optional ``(B, C', H, W)`` image; the differences are then weighted by
            ``exp(-edge_sensitivity * |guidance difference|)`` (mean over channels), so the map may
            change across the guidance's edges (Retinex structure-aware smoothness).
        edge_sensitivity: how fast the smoothness weight falls at guidance edges.
    """
    dx = (illum_map[..., :, 1:] - illum_map[..., :, :-1]).abs()
    dy = (illum_map[..., 1:, :] - illum_map[..., :-1, :]).abs()
    if guidance is not None:
        guide_dx = (guidance[..., :, 1:] - guidance[..., :, :-1]).abs().mean(dim=1, keepdim=True)
        guide_dy = (guidance[..., 1:, :] - guidance[..., :-1, :]).abs().mean(dim=1, keepdim=True)
        dx = dx * torch.exp(-edge_sensitivity * guide_dx)
        dy = dy * torch.exp(-edge_sensitivity * guide_dy)
    return _reduce(_image_mean(dx) + _image_mean(dy), reduction)


class PerceptualLoss(nn.Module):
    """LPIPS (AlexNet trunk, v0.1 linear heads) between two RGB images in ``[0, 1]``, frozen.

    Nothing is downloaded: the linear heads ship inside the ``lpips`` package, and the AlexNet
    trunk is loaded from a local file (``backbone_path`` or the ``ALLINONE_LPIPS_BACKBONE``
    environment variable) holding a torchvision AlexNet, lpips trunk or full LPIPS state dict.

    Raises:
        FileNotFoundError: no path given / set, or the file does not exist.
    """

    def __init__(self, backbone_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.lpips = load_lpips(resolve_lpips_backbone(backbone_path, "alex"), "alex")

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        # LPIPS's dropout belongs to fitting LPIPS itself, never to using it as a loss
        self.lpips.eval()
        return self

    def forward(self, pred_rgb: torch.Tensor, target_rgb: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """LPIPS distance of ``(B, 3, H, W)`` images in ``[0, 1]`` (H, W >= 32 for the AlexNet trunk)."""
        return _reduce(self.lpips(pred_rgb, target_rgb, normalize=True).flatten(), reduction)


def build_perceptual_loss(path: str | os.PathLike | None = None) -> PerceptualLoss | None:
    """:class:`PerceptualLoss` from ``path`` (or ``ALLINONE_LPIPS_BACKBONE``), or None with a log message if absent."""
    try:
        return PerceptualLoss(path)
    except FileNotFoundError as error:
        logger.info("perceptual (LPIPS) loss disabled: %s", error)
        return None


class FusionLoss(nn.Module):
    """All fusion terms, each weighted per sample by its degradation labels (see :class:`LossWeights`).

    Targets are the CLEAN sources: intensity, gradient and SSIM against the clean IR and clean
    VIS luminance, colour against the clean VIS chroma, brightness against ``reference_y``
    (default: clean VIS luminance). The dark-region mask comes from the clean VIS image, the
    illumination weights from the clean VIS or, given ``illumination_rgb``, from the darker of the
    two. ``smoothness`` needs a predicted illumination map and ``perceptual`` a
    :class:`PerceptualLoss`; without them, or with a base weight of 0, a term is skipped.

    Args:
        weights: term weights and per-degradation multipliers (defaults if None).
        perceptual: optional LPIPS module (e.g. from :func:`build_perceptual_loss`).
        dark_threshold: luminance below which :func:`dark_region_mask` marks a region dark.
        gradient_target: the texture target of the ``gradient`` term, one of ``GRADIENT_TARGETS``:
            ``"strongest_source"`` (:func:`max_gradient_loss`, SeAFusion), ``"max_image"``
            (:func:`max_image_gradient_loss`), or ``"max_image_when_clean"``: the max image for clean
            samples (all-zero labels), the strongest source for degraded ones, whose per-degradation
            weights lean on the IR's edges where the VIS lost its own (``"max_image"`` for every sample
            collapses the output told lowlight, whose weights ask for the IR's intensity, not the max;
            docs/BENCHMARKS.md).
        ssim_data_range: the data range L of the two SSIM terms (constants (0.01 L)^2, (0.03 L)^2);
            :data:`EVALUATION_SSIM_DATA_RANGE` makes them count sub-grey-level structure as the
            evaluation does.
        ssim_luminance: keep SSIM's luminance factor in the two SSIM terms, as the evaluation's SSIM does.
            Off (structure and contrast only, as MEF-SSIM): the luminance factor pulls a region bright in
            one source and dark in the other (a saturated sky over a cold IR sky) toward a grey in
            between, since that halves both luminance penalties, and brightness is the intensity terms'
            job. On, the max-intensity term must hold that pull back (docs/BENCHMARKS.md).
    """

    def __init__(
        self,
        weights: LossWeights | None = None,
        perceptual: PerceptualLoss | None = None,
        dark_threshold: float = 0.2,
        gradient_target: str = "strongest_source",
        ssim_data_range: float = 1.0,
        ssim_luminance: bool = False,
    ) -> None:
        super().__init__()
        check_fusion_loss_options(gradient_target, ssim_data_range)
        self.gradient_target = gradient_target
        self.ssim_data_range = ssim_data_range
        self.ssim_luminance = ssim_luminance
        self.weights = weights if weights is not None else LossWeights()
        self.perceptual = perceptual
        self.dark_threshold = dark_threshold

    def _ssim(self, fused_y: torch.Tensor, source_y: torch.Tensor) -> torch.Tensor:
        """The per-image SSIM term (B,) against one source, under ``ssim_data_range`` and ``ssim_luminance``."""
        return _ssim_dissimilarity(fused_y, source_y, window_size=11, structure_only=not self.ssim_luminance,
                                   data_range=self.ssim_data_range)

    def _gradient(self, fused_y: torch.Tensor, ir: torch.Tensor, vi_y: torch.Tensor, labels: torch.Tensor
                  ) -> torch.Tensor:
        """The per-image ``gradient`` term (B,) under ``gradient_target``."""
        if self.gradient_target == "strongest_source":
            return max_gradient_loss(fused_y, ir, vi_y, reduction="none")
        max_image = max_image_gradient_loss(fused_y, ir, vi_y, reduction="none")
        if self.gradient_target == "max_image":
            return max_image
        clean = (labels == 0).all(dim=1)
        return torch.where(clean, max_image, max_gradient_loss(fused_y, ir, vi_y, reduction="none"))

    def forward(
        self,
        fused_rgb: torch.Tensor,
        ir: torch.Tensor,
        vis_rgb: torch.Tensor,
        labels: torch.Tensor,
        illumination_map: torch.Tensor | None = None,
        reference_y: torch.Tensor | None = None,
        illumination_rgb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total loss and the unweighted batch-mean value of each computed term.

        Args:
            fused_rgb: model output ``(B, 3, H, W)`` in ``[0, 1]``; H, W >= 16 (exposure patches),
                >= 32 when the perceptual term is on.
            ir: clean IR ``(B, 1, H, W)``.
            vis_rgb: clean VIS ``(B, 3, H, W)``.
            labels: degradation label vectors ``(B, len(DEGRADATION_TYPES))``, entry = level / 5.
            illumination_map: optional ``(B, C, H, W)`` illumination map predicted by the model.
            reference_y: optional ``(B, 1, H, W)`` brightness reference (e.g. an enhanced VIS Y).
            illumination_rgb: optional second VIS image ``(B, 3, H, W)``, typically the degraded
                input: the intensity term then weights the IR as at night when either this image or
                the clean VIS is dark. PIAFusion judges the input's illumination, so a synthetic
                night made from a day scene should lean on the IR as a real night does; taking the
                darker of the two keeps a veil that brightens the input (haze) from moving weight
                to the VIS. Without it, only the clean VIS is judged.

        Returns:
            ``(total, terms)``: scalar total, and ``{term name: detached scalar}``.
        """
        weights = self.weights.effective(labels.to(fused_rgb.dtype))  # (B, T)
        base = {name: float(getattr(self.weights, name)) for name in TERMS}
        fused_y, _ = rgb_to_y_cbcr(fused_rgb)
        vi_y, _ = rgb_to_y_cbcr(vis_rgb)
        w_ir, w_vi = illumination_weights(vis_rgb)
        if illumination_rgb is not None:
            w_ir = torch.maximum(w_ir, illumination_weights(illumination_rgb)[0])
            w_vi = 1.0 - w_ir

        term_fns = {
            "intensity": lambda: illumination_intensity_loss(fused_y, ir, vi_y, w_ir, w_vi, reduction="none"),
            "max_intensity": lambda: max_intensity_loss(fused_y, ir, vi_y, reduction="none"),
            "gradient": lambda: self._gradient(fused_y, ir, vi_y, labels),
            "ssim_ir": lambda: self._ssim(fused_y, ir),
            "ssim_vi": lambda: self._ssim(fused_y, vi_y),
            "color": lambda: color_consistency_loss(fused_rgb, vis_rgb, reduction="none"),
            "exposure": lambda: exposure_control_loss(fused_y, reduction="none"),
            "brightness": lambda: brightness_consistency_loss(
                fused_y, vi_y if reference_y is None else reference_y, reduction="none"
            ),
            "max_entropy": lambda: max_entropy_loss(
                fused_y, dark_region_mask(vi_y, threshold=self.dark_threshold), reduction="none"
            ),
        }
        if illumination_map is not None:
            term_fns["smoothness"] = lambda: illumination_smoothness_loss(illumination_map, reduction="none")
        if self.perceptual is not None:
            term_fns["perceptual"] = lambda: self.perceptual(fused_rgb, vis_rgb, reduction="none")

        total = fused_rgb.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for name, term_fn in term_fns.items():
            if base[name] == 0.0:
                continue
            per_image = term_fn()
            total = total + (weights[:, TERMS.index(name)] * per_image).mean()
            terms[name] = per_image.detach().mean()
        return total, terms
