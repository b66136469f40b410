"""Tests of the illumination-aware fusion loss terms and their degradation-aware weighting."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from allinone import losses
from allinone.loss_config import TERMS, WEIGHTS_BY_DEGRADATION, LossWeights
from allinone.lpips_backbone import LPIPS_BACKBONE_ENV
from allinone.losses import (
    FusionLoss,
    PerceptualLoss,
    brightness_consistency_loss,
    build_perceptual_loss,
    color_consistency_loss,
    dark_region_mask,
    exposure_control_loss,
    illumination_intensity_loss,
    illumination_smoothness_loss,
    illumination_weights,
    max_entropy_loss,
    max_gradient_loss,
    max_image_gradient_loss,
    max_intensity_loss,
    rgb_to_y_cbcr,
    ssim_loss,
)
from degradations.labels import DEGRADATION_TYPES, label_vector

DATA_ROOT = Path(os.environ.get("ALLINONE_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _texture(batch: int = 2, channels: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random texture in [0.1, 0.9] (blurred noise, so it has real edges and structure)."""
    noise = torch.rand(batch, channels, size, size, generator=_gen(seed))
    smooth = F.avg_pool2d(F.pad(noise, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    smooth = (smooth - smooth.amin()) / (smooth.amax() - smooth.amin())
    return 0.1 + 0.8 * smooth


def _add_noise(image: torch.Tensor, sigma: float = 0.1, seed: int = 1) -> torch.Tensor:
    return (image + sigma * torch.randn(image.shape, generator=_gen(seed))).clamp(0, 1)


def _blur(image: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(image, (2, 2, 2, 2), mode="reflect"), 5, stride=1)


# ---------------------------------------------------------------- illumination weights + intensity


def test_illumination_weights_favour_ir_at_night_and_vis_by_day():
    dark = torch.full((1, 3, 16, 16), 0.05)
    bright = torch.full((1, 3, 16, 16), 0.6)
    w_ir, w_vi = illumination_weights(torch.cat([dark, bright]))
    assert w_ir.shape == w_vi.shape == (2, 1, 1, 1)
    assert w_ir[0] > w_vi[0] and w_vi[1] > w_ir[1]
    torch.testing.assert_close(w_ir + w_vi, torch.ones_like(w_ir))


def test_illumination_weights_on_real_msrs_day_and_night():
    vi_dir = DATA_ROOT / "eval" / "msrs_test" / "vi"
    night = sorted(vi_dir.glob("*N.png"))[:1]
    day = sorted(vi_dir.glob("*D.png"))[:1]
    if not (night and day):
        pytest.skip(f"MSRS eval pairs not found under {vi_dir}")
    import imageio.v3 as iio

    def load(path: Path) -> torch.Tensor:
        return torch.from_numpy(iio.imread(path)[..., :3].copy()).permute(2, 0, 1)[None].float() / 255

    w_ir_night, w_vi_night = illumination_weights(load(night[0]))
    w_ir_day, w_vi_day = illumination_weights(load(day[0]))
    assert w_ir_night.item() > 0.5 > w_ir_day.item()
    assert w_vi_day.item() > w_vi_night.item()


def test_intensity_loss_with_ir_weight_one_is_l1_to_ir():
    fused, ir, vi = _texture(seed=0), _texture(seed=1), _texture(seed=2)
    loss = illumination_intensity_loss(fused, ir, vi, w_ir=1.0, w_vi=0.0)
    torch.testing.assert_close(loss, F.l1_loss(fused, ir))
    assert illumination_intensity_loss(ir, ir, vi, w_ir=1.0, w_vi=0.0).item() == 0.0


def test_intensity_loss_uses_per_image_weights():
    fused, ir, vi = _texture(seed=0), _texture(seed=1), _texture(seed=2)
    w_ir = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    per_image = illumination_intensity_loss(fused, ir, vi, w_ir, 1 - w_ir, reduction="none")
    torch.testing.assert_close(per_image[0], F.l1_loss(fused[0], ir[0]))
    torch.testing.assert_close(per_image[1], F.l1_loss(fused[1], vi[1]))


def test_max_intensity_loss_zero_at_source_max_and_grows_with_noise():
    ir, vi = _texture(seed=1), _texture(seed=2)
    target = torch.maximum(ir, vi)
    assert max_intensity_loss(target, ir, vi).item() == 0.0
    assert max_intensity_loss(_add_noise(target), ir, vi) > 0.01


# ---------------------------------------------------------------- texture / structure / colour


def test_max_gradient_loss_zero_when_fused_is_the_dominant_source():
    ir = _texture(seed=3)
    vi = 0.5 * ir + 0.25  # same structure, half the gradient everywhere: IR dominates
    assert max_gradient_loss(ir, ir, vi).item() < 1e-6
    clean = max_gradient_loss(ir, ir, vi)
    assert max_gradient_loss(_add_noise(ir), ir, vi) > clean + 0.05
    assert max_gradient_loss(_blur(ir), ir, vi) > clean + 0.05


def test_max_image_gradient_loss_asks_for_the_edges_of_the_max_intensity_target():
    # Dim IR texture under a flat bright VIS (a cold, leafy IR under a daylight sky): the max image is the
    # flat VIS, so the max-image target asks for no edges there, while the strongest-source target asks
    # for the IR's, which no output equal to the intensity target can give.
    ir = 0.1 + 0.3 * _texture(seed=4)
    vi = torch.full_like(ir, 0.8)
    target = torch.maximum(ir, vi)
    assert max_image_gradient_loss(target, ir, vi).item() == 0.0
    assert max_gradient_loss(target, ir, vi) > 0.05
    # Where the IR is the brighter source, its edges are the target under both.
    bright_ir = 0.5 + 0.5 * _texture(seed=4)
    dim_vi = torch.full_like(ir, 0.2)
    assert max_image_gradient_loss(bright_ir, bright_ir, dim_vi).item() == 0.0
    assert max_image_gradient_loss(_blur(bright_ir), bright_ir, dim_vi) > 0.05


def test_fusion_loss_gradient_target_selects_the_texture_term():
    fused, ir, vis = _fusion_batch()
    labels = torch.zeros(2, len(DEGRADATION_TYPES))
    vi_y, _ = rgb_to_y_cbcr(vis)
    fused_y, _ = rgb_to_y_cbcr(fused)
    for target, term in (("strongest_source", max_gradient_loss), ("max_image", max_image_gradient_loss)):
        _, terms = FusionLoss(gradient_target=target)(fused, ir, vis, labels)
        torch.testing.assert_close(terms["gradient"], term(fused_y, ir, vi_y))
    # "max_image_when_clean": the first sample is clean, the second degraded.
    labels = torch.stack([label_vector({}), label_vector({"haze": 3})])
    _, terms = FusionLoss(gradient_target="max_image_when_clean")(fused, ir, vis, labels)
    clean = max_image_gradient_loss(fused_y, ir, vi_y, reduction="none")[0]
    degraded = max_gradient_loss(fused_y, ir, vi_y, reduction="none")[1]
    torch.testing.assert_close(terms["gradient"], (clean + degraded) / 2)
    assert not torch.isclose(clean, max_gradient_loss(fused_y, ir, vi_y, reduction="none")[0])
    with pytest.raises(ValueError, match="gradient_target"):
        FusionLoss(gradient_target="mean")


def test_structure_only_ssim_ignores_local_means_full_ssim_does_not():
    ir, vi = _IR_8.clone(), _VI_8.clone()
    brighter = ir + 0.3  # a brightness shift keeps the local contrast and structure
    assert ssim_loss(brighter, ir, vi, w_ir=1.0, w_vi=0.0, window_size=5, structure_only=True).item() < 1e-4
    assert ssim_loss(brighter, ir, vi, w_ir=1.0, w_vi=0.0, window_size=5).item() > 0.01
    assert ssim_loss(_add_noise(ir), ir, vi, w_ir=1.0, w_vi=0.0, window_size=5, structure_only=True) > 0.05


def test_ssim_data_range_decides_whether_sub_level_structure_counts():
    # A flat target window against an output that departs from it by one 8-bit level here and there.
    flat = torch.full((1, 1, 32, 32), 0.6)
    speckled = flat + (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.8) / 255.0
    coarse = losses._ssim_dissimilarity(speckled, flat, window_size=7, structure_only=True)
    fine = losses._ssim_dissimilarity(speckled, flat, window_size=7, structure_only=True,
                                      data_range=losses.EVALUATION_SSIM_DATA_RANGE)
    assert coarse.item() < 0.01  # L = 1: invisible
    assert fine.item() > 0.9  # the evaluation convention: the window's structure is gone
    # Exactly reproducing the flat target costs nothing under either range.
    assert losses._ssim_dissimilarity(flat, flat, 7, True, losses.EVALUATION_SSIM_DATA_RANGE).item() == 0.0


@pytest.mark.parametrize("structure_only", [True, False])
def test_ssim_is_exact_for_sub_level_variations_in_float32(structure_only):
    # Centring before the moments: float32 must agree with float64 on one-level variations near white.
    base = 0.9 + torch.randint(0, 3, (2, 1, 24, 24), generator=torch.Generator().manual_seed(1)) / 255.0
    other = base + torch.randint(0, 2, base.shape, generator=torch.Generator().manual_seed(2)) / 255.0
    range_ = losses.EVALUATION_SSIM_DATA_RANGE
    single = losses._ssim_dissimilarity(other, base, 7, structure_only, range_)
    double = losses._ssim_dissimilarity(other.double(), base.double(), 7, structure_only, range_)
    torch.testing.assert_close(single.double(), double, atol=1e-4, rtol=0)


def test_fusion_loss_ssim_data_range_reaches_the_ssim_terms():
    fused, ir, vis = _fusion_batch()
    labels = torch.zeros(2, len(DEGRADATION_TYPES))
    fused_y, _ = rgb_to_y_cbcr(fused)
    _, terms = FusionLoss(ssim_data_range=0.1)(fused, ir, vis, labels)
    expected = losses._ssim_dissimilarity(fused_y, ir, 11, structure_only=True, data_range=0.1).mean()
    torch.testing.assert_close(terms["ssim_ir"], expected)
    with pytest.raises(ValueError, match="ssim_data_range"):
        FusionLoss(ssim_data_range=0.0)


def test_fusion_loss_ssim_luminance_keeps_the_luminance_factor():
    fused, ir, vis = _fusion_batch()
    labels = torch.zeros(2, len(DEGRADATION_TYPES))
    fused_y, _ = rgb_to_y_cbcr(fused)
    vi_y, _ = rgb_to_y_cbcr(vis)
    for luminance in (False, True):
        _, terms = FusionLoss(ssim_luminance=luminance)(fused, ir, vis, labels)
        for term, source in (("ssim_ir", ir), ("ssim_vi", vi_y)):
            expected = losses._ssim_dissimilarity(fused_y, source, 11, structure_only=not luminance).mean()
            torch.testing.assert_close(terms[term], expected)
    # The IR itself, brightened: same structure, so only the luminance factor sees the shift.
    brighter = (ir + 0.2).expand(-1, 3, -1, -1)
    plain, lum = (FusionLoss(ssim_luminance=flag)(brighter, ir, vis, labels)[1]["ssim_ir"] for flag in (False, True))
    assert plain.item() < 1e-4
    assert lum.item() > 0.01


def test_ssim_loss_zero_for_identical_and_grows_with_noise():
    ir, vi = _texture(seed=4), _texture(seed=5)
    assert ssim_loss(ir, ir, ir).abs().item() < 1e-4
    # with all weight on IR, the VIS image does not matter
    assert ssim_loss(ir, ir, vi, w_ir=1.0, w_vi=0.0).abs().item() < 1e-4
    assert ssim_loss(_add_noise(ir), ir, vi, w_ir=1.0, w_vi=0.0) > 0.1
    assert ssim_loss(ir, ir, vi) > 0.1  # half the weight on a different image


def test_color_consistency_ignores_luminance_and_sees_chroma_shift():
    vi = _texture(channels=3, seed=6) * 0.8
    brighter = vi + 0.1  # a grey offset changes Y only
    assert color_consistency_loss(brighter, vi).item() < 1e-6
    bluer = vi.clone()
    bluer[:, 2] += 0.15
    assert color_consistency_loss(bluer, vi) > 0.02
    assert color_consistency_loss(_add_noise(vi), vi) > 0.01


def test_rgb_to_y_cbcr_grey_has_neutral_chroma():
    y, cbcr = rgb_to_y_cbcr(torch.full((1, 3, 4, 4), 0.3))
    torch.testing.assert_close(y, torch.full((1, 1, 4, 4), 0.3))
    torch.testing.assert_close(cbcr, torch.full((1, 2, 4, 4), 0.5))


# ---------------------------------------------------------------- exposure / brightness / entropy


def test_exposure_loss_zero_at_well_exposed_level_larger_when_darker():
    flat = torch.full((1, 1, 32, 32), 0.6)
    assert exposure_control_loss(flat).item() == pytest.approx(0.0, abs=1e-12)
    mid = exposure_control_loss(torch.full((1, 1, 32, 32), 0.4))
    dark = exposure_control_loss(torch.full((1, 1, 32, 32), 0.1))
    assert dark > mid > 0
    assert dark.item() == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match="smaller than the exposure patch"):
        exposure_control_loss(torch.zeros(1, 1, 8, 8), patch=16)


def test_brightness_consistency_ignores_fine_detail_but_not_global_level():
    reference = torch.full((1, 1, 32, 32), 0.5)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    detailed = reference + 0.1 * (checker.float() * 2 - 1)  # zero-mean within every 4x4 region
    assert brightness_consistency_loss(detailed, reference).item() < 1e-6
    assert brightness_consistency_loss(reference - 0.2, reference).item() == pytest.approx(0.2, abs=1e-6)


def test_dark_region_mask_marks_dark_regions():
    image = torch.full((1, 1, 32, 32), 0.6)
    image[..., :, :16] = 0.03
    mask = dark_region_mask(image)
    assert mask.shape == image.shape
    assert mask[..., :, :8].min() > 0.9 and mask[..., :, 24:].max() < 0.01


def test_max_entropy_loss_small_for_spread_large_for_flat_dark_region():
    full_mask = torch.ones(1, 1, 32, 32)
    ramp = torch.linspace(0, 1, 32 * 32).view(1, 1, 32, 32)
    flat = torch.full((1, 1, 32, 32), 0.5 / 16)  # on a bin centre: all mass in one bin
    assert max_entropy_loss(ramp, full_mask).item() < 0.02
    assert max_entropy_loss(flat, full_mask).item() > 0.85
    # between two centres the soft histogram splits the mass: still far from spread
    assert max_entropy_loss(torch.full_like(flat, 1 / 16), full_mask).item() > 0.7
    # degrading the output by squeezing its range in the dark region raises the loss
    assert max_entropy_loss(0.2 * ramp, full_mask) > max_entropy_loss(ramp, full_mask) + 0.3
    # no dark region: nothing to enhance
    assert max_entropy_loss(flat, torch.zeros_like(flat)).item() == 0.0


def test_max_entropy_loss_scales_with_dark_coverage():
    flat = torch.full((1, 1, 32, 32), 0.05)
    half_mask = torch.zeros_like(flat)
    half_mask[..., :16, :] = 1
    full = max_entropy_loss(flat, torch.ones_like(flat))
    torch.testing.assert_close(max_entropy_loss(flat, half_mask), 0.5 * full)


def test_illumination_smoothness_zero_for_constant_larger_for_noise():
    constant = torch.full((2, 3, 16, 16), 0.4)
    assert illumination_smoothness_loss(constant).item() == 0.0
    assert illumination_smoothness_loss(_add_noise(constant)) > 0.05


def test_illumination_smoothness_edge_aware_allows_steps_on_guidance_edges():
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    plain = illumination_smoothness_loss(step)
    assert illumination_smoothness_loss(step, guidance=step) < 0.01 * plain
    assert illumination_smoothness_loss(step, guidance=torch.zeros_like(step)) == plain


# ---------------------------------------------------------------- gradients


def _term_calls(fused_y: torch.Tensor, fused_rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    ir, vi_y, vi_rgb = _texture(seed=7), _texture(seed=8), _texture(channels=3, seed=9)
    return {
        "intensity": illumination_intensity_loss(fused_y, ir, vi_y, 0.3, 0.7),
        "max_intensity": max_intensity_loss(fused_y, ir, vi_y),
        "gradient": max_gradient_loss(fused_y, ir, vi_y),
        "ssim": ssim_loss(fused_y, ir, vi_y),
        "color": color_consistency_loss(fused_rgb, vi_rgb),
        "exposure": exposure_control_loss(fused_y),
        "brightness": brightness_consistency_loss(fused_y, vi_y),
        "max_entropy": max_entropy_loss(fused_y, dark_region_mask(vi_y, threshold=0.5)),
        "smoothness": illumination_smoothness_loss(fused_y, guidance=vi_y),
    }


def test_every_term_backpropagates_finite_gradients():
    fused_y = _texture(seed=10).requires_grad_(True)
    fused_rgb = _texture(channels=3, seed=11).requires_grad_(True)
    for name, value in _term_calls(fused_y, fused_rgb).items():
        assert value.ndim == 0 and torch.isfinite(value), name
        (grad,) = torch.autograd.grad(value, fused_rgb if name == "color" else fused_y)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


_IR_8 = torch.rand(1, 1, 8, 8, generator=_gen(20), dtype=torch.float64)
_VI_8 = torch.rand(1, 1, 8, 8, generator=_gen(21), dtype=torch.float64)


@pytest.mark.parametrize(
    "term",
    [
        lambda x: exposure_control_loss(x, patch=4),
        lambda x: ssim_loss(x, _IR_8, _VI_8, window_size=5),
        lambda x: max_entropy_loss(x, torch.ones_like(x), num_bins=4),
        lambda x: illumination_weights(x)[0].sum(),
        lambda x: dark_region_mask(x, threshold=0.5, kernel_size=3).sum(),
        lambda x: illumination_intensity_loss(x, _IR_8, _VI_8, 0.3, 0.7),
    ],
    ids=["exposure", "ssim", "max_entropy", "illumination_weights", "dark_mask", "intensity"],
)
def test_gradcheck_smooth_terms(term):
    x = torch.rand(1, 1, 8, 8, generator=_gen(12), dtype=torch.float64).mul(0.8).add(0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(term, (x,), eps=1e-6, atol=1e-4)


# ---------------------------------------------------------------- perceptual (LPIPS)


def test_perceptual_loss_without_weights_raises_clear_error(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(LPIPS_BACKBONE_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=LPIPS_BACKBONE_ENV):
        PerceptualLoss()
    missing = tmp_path / "alexnet.pth"
    with pytest.raises(FileNotFoundError, match="alexnet.pth"):
        PerceptualLoss(missing)
    with caplog.at_level(logging.INFO, logger=losses.__name__):
        assert build_perceptual_loss(missing) is None
    assert "perceptual (LPIPS) loss disabled" in caplog.text


@pytest.fixture(scope="module")
def random_alexnet_features(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random AlexNet ``features`` state dict saved in torchvision's key format."""
    torch.manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for index, shape in shapes.items():
        state[f"features.{index}.weight"] = torch.randn(shape) * math.sqrt(2 / math.prod(shape[1:]))
        state[f"features.{index}.bias"] = torch.zeros(shape[0])
    path = tmp_path_factory.mktemp("lpips") / "alexnet_features.pth"
    torch.save(state, path)
    return path, state


def test_perceptual_loss_loads_local_backbone(random_alexnet_features, monkeypatch):
    path, state = random_alexnet_features
    monkeypatch.setenv(LPIPS_BACKBONE_ENV, str(path))
    perceptual = build_perceptual_loss()
    assert isinstance(perceptual, PerceptualLoss)
    torch.testing.assert_close(perceptual.lpips.net.state_dict()["slice3.6.weight"], state["features.6.weight"])
    perceptual.train()
    assert not perceptual.lpips.training  # dropout of the LPIPS heads stays off

    image = _texture(batch=1, channels=3, size=64, seed=13)
    assert perceptual(image, image).abs().item() < 1e-6
    noisy = _add_noise(image, sigma=0.2).requires_grad_(True)
    distance = perceptual(noisy, image)
    assert distance > 0
    (grad,) = torch.autograd.grad(distance, noisy)
    assert torch.isfinite(grad).all()


# ---------------------------------------------------------------- FusionLoss + config


def _fusion_batch(batch: int = 2):
    vis = _texture(batch=batch, channels=3, seed=14)
    ir = _texture(batch=batch, seed=15)
    fused = (0.5 * vis + 0.5 * ir).requires_grad_(True)
    return fused, ir, vis


def test_fusion_loss_returns_finite_total_terms_and_gradients():
    fused, ir, vis = _fusion_batch()
    labels = torch.stack([label_vector({}), label_vector({"haze": 3, "noise": 2})])
    total, terms = FusionLoss()(fused, ir, vis, labels)
    assert total.ndim == 0 and torch.isfinite(total)
    assert set(terms) == set(TERMS) - {"smoothness", "perceptual"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in terms.values())
    (grad,) = torch.autograd.grad(total, fused)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_fusion_loss_optional_terms():
    fused, ir, vis = _fusion_batch()
    labels = torch.zeros(2, len(DEGRADATION_TYPES))
    _, terms = FusionLoss()(fused, ir, vis, labels, illumination_map=torch.full((2, 1, 32, 32), 0.5))
    assert terms["smoothness"].item() == 0.0
    _, terms = FusionLoss(LossWeights(gradient=0.0))(fused, ir, vis, labels)
    assert "gradient" not in terms


def test_fusion_loss_weights_the_ir_when_the_input_or_the_clean_vis_is_dark():
    # A fused image equal to the IR: the intensity term is w_vi * L1(F, VIS), near zero when the IR has
    # all the weight (night) and near L1(IR, VIS) when the VIS has it (day).
    _, ir, vis = _fusion_batch()
    day, night = vis * 0.5 + 0.5, vis * 0.05  # mean luminance well above / below the day-night midpoint
    labels = torch.zeros(2, len(DEGRADATION_TYPES))
    loss = FusionLoss(LossWeights(**{t: 0.0 for t in TERMS if t != "intensity"}))

    def intensity(clean, **kwargs):
        return loss(ir.repeat(1, 3, 1, 1), ir, clean, labels, **kwargs)[1]["intensity"]

    by_day = intensity(day)
    assert intensity(day, illumination_rgb=night) < 0.05 * by_day  # a synthetic night of a day scene
    assert intensity(day, illumination_rgb=day) == pytest.approx(by_day.item(), rel=1e-4)  # day judged day
    # A brighter input (a haze veil over a night scene) moves no weight to the VIS.
    assert intensity(night, illumination_rgb=day) == pytest.approx(intensity(night).item(), rel=1e-4)


def test_fusion_loss_weighting_follows_labels():
    fused, ir, vis = _fusion_batch()
    loss = FusionLoss()
    clean = torch.zeros(2, len(DEGRADATION_TYPES))
    lowlight = torch.stack([label_vector({"lowlight": 5})] * 2)
    noise = torch.stack([label_vector({"noise": 5})] * 2)
    total_clean, terms = loss(fused, ir, vis, clean)
    total_lowlight, _ = loss(fused, ir, vis, lowlight)
    total_noise, _ = loss(fused, ir, vis, noise)
    weights = LossWeights()
    # lowlight raises exposure, entropy and brightness weights by their multipliers
    extra = sum(
        (m - 1) * getattr(weights, term) * terms[term] for term, m in WEIGHTS_BY_DEGRADATION["lowlight"].items()
    )
    torch.testing.assert_close(total_lowlight, total_clean + extra)
    assert total_noise != total_clean
    # per-sample weighting: a mixed batch is the mean of its samples' totals
    mixed = torch.stack([lowlight[0], noise[0]])
    total_mixed, _ = loss(fused, ir, vis, mixed)
    first, _ = loss(fused[:1], ir[:1], vis[:1], lowlight[:1])
    second, _ = loss(fused[1:], ir[1:], vis[1:], noise[:1])
    torch.testing.assert_close(total_mixed, (first + second) / 2)


def test_fusion_loss_is_smaller_for_better_fusion():
    fused, ir, vis = _fusion_batch()
    labels = torch.zeros(2, len(DEGRADATION_TYPES))
    good, _ = FusionLoss()(fused.detach(), ir, vis, labels)
    bad, _ = FusionLoss()(_add_noise(fused.detach(), sigma=0.15), ir, vis, labels)
    assert bad > good


def test_effective_weights_are_geometric_in_labels():
    weights = LossWeights()
    labels = torch.stack([label_vector({}), label_vector({"noise": 5}), label_vector({"noise": 5, "blur": 5})])
    effective = weights.effective(labels)
    gradient = TERMS.index("gradient")
    assert effective.shape == (3, len(TERMS))
    assert effective[0, gradient] == weights.gradient
    noise, blur = WEIGHTS_BY_DEGRADATION["noise"]["gradient"], WEIGHTS_BY_DEGRADATION["blur"]["gradient"]
    assert noise != 1.0 and blur != 1.0
    assert effective[1, gradient] == pytest.approx(weights.gradient * noise)
    assert effective[2, gradient] == pytest.approx(weights.gradient * noise * blur)
    half_noise = weights.effective(label_vector({"noise": 2}).unsqueeze(0) * 1.25)  # label 0.5
    assert half_noise[0, gradient] == pytest.approx(weights.gradient * noise**0.5)
    assert (weights.effective(torch.ones(4, len(DEGRADATION_TYPES))) >= 0).all()
    with pytest.raises(ValueError, match="labels must be"):
        weights.effective(torch.zeros(2, 3))


def test_loss_weights_round_trip_and_validation():
    weights = LossWeights(gradient=3.0, by_degradation={"haze": {"color": 4.0}})
    dumped = json.loads(json.dumps(weights.to_dict()))
    assert LossWeights.from_dict(dumped) == weights
    # a partial config changes only what it lists
    partial = LossWeights.from_dict({"color": 1.0, "by_degradation": {"haze": {"color": 3.0}}})
    assert partial.color == 1.0 and partial.gradient == LossWeights().gradient
    assert partial.by_degradation["haze"]["color"] == 3.0
    assert partial.by_degradation["haze"]["gradient"] == WEIGHTS_BY_DEGRADATION["haze"]["gradient"]
    assert partial.by_degradation["lowlight"] == WEIGHTS_BY_DEGRADATION["lowlight"]
    with pytest.raises(ValueError, match="unknown LossWeights keys"):
        LossWeights.from_dict({"colour": 1.0})
    with pytest.raises(ValueError, match="unknown loss term"):
        LossWeights.from_dict({"by_degradation": {"haze": {"colour": 2.0}}})
    with pytest.raises(ValueError, match="unknown degradation"):
        LossWeights.from_dict({"by_degradation": {"fog": {"color": 2.0}}})
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(ssim_ir=-1.0)


def test_config_tables_cover_every_term_and_degradation():
    assert set(WEIGHTS_BY_DEGRADATION) == set(DEGRADATION_TYPES)
    assert [f.name for f in dataclasses.fields(LossWeights)] == [*TERMS, "by_degradation"]


@pytest.mark.parametrize("prefix", ["", "net."], ids=["lpips_trunk", "whole_lpips"])
def test_perceptual_loss_reads_lpips_state_dicts_too(random_alexnet_features, tmp_path, prefix):
    path, state = random_alexnet_features
    trunk = PerceptualLoss(path).lpips.net.state_dict()  # keys like slice3.6.weight
    saved = tmp_path / "lpips.pth"
    torch.save({prefix + key: value for key, value in trunk.items()}, saved)
    reloaded = PerceptualLoss(saved).lpips.net.state_dict()
    assert reloaded.keys() == trunk.keys()
    for key in trunk:
        torch.testing.assert_close(reloaded[key], trunk[key])
    torch.testing.assert_close(reloaded["slice3.6.weight"], state["features.6.weight"])
