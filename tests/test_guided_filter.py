"""The guided filter against its closed forms, and debanding: quantization steps go, edges stay."""
import pytest
import torch

from allinone.models.dark_channel import box_mean
from allinone.models.guided_filter import deband, guided_filter, smooth_below


def _quantized_ramp(height=32, width=128, levels_per_pixel=0.125):
    """A horizontal ramp rounded to 8-bit levels: a step of one grey level every 8 pixels, (1, 3, H, W)."""
    ramp = (100 + torch.arange(width, dtype=torch.float64) * levels_per_pixel).round() / 255.0
    return ramp.expand(1, 3, height, width).contiguous()


def test_a_flat_guide_gives_the_twice_box_filtered_source():
    source = torch.rand(1, 2, 24, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    guide = torch.full((1, 1, 24, 20), 0.5, dtype=torch.float64)
    torch.testing.assert_close(guided_filter(guide, source, 5, 1e-4), box_mean(box_mean(source, 5), 5))


def test_self_guided_with_tiny_eps_keeps_the_image():
    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(guided_filter(image, image, 5, 1e-12), image)
    torch.testing.assert_close(guided_filter(image, image, 8, 1e-12, subsample=4), image, atol=1e-6, rtol=0)


def test_guided_filter_gradcheck():
    generator = torch.Generator().manual_seed(2)
    guide = torch.rand(1, 1, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    source = torch.rand(1, 1, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, s: guided_filter(g, s, 3, 1e-2, subsample=2), (guide, source))


def test_deband_smooths_quantization_steps_and_keeps_an_edge():
    ramp = _quantized_ramp()
    smoothed = deband(ramp, 1.5)
    jumps = (ramp.diff(dim=-1) * 255).abs()
    smoothed_jumps = (smoothed.diff(dim=-1) * 255).abs()
    assert jumps.max() == pytest.approx(1.0) and smoothed_jumps[..., 8:-8].max() < 0.5  # steps become a slope
    edge = ramp.clone()
    edge[..., 64:] += 40 / 255.0
    out = deband(edge, 1.5)
    assert (out[..., 66] - out[..., 61]).min() * 255 > 30  # the 40-level edge stays within a few pixels
    assert (out[..., 96:] - edge[..., 96:]).abs().max() * 255 < 0.6  # and away from it, the ramp stays put


def test_deband_levels_zero_is_the_identity_and_bad_arguments_raise():
    ramp = _quantized_ramp()
    assert deband(ramp, 0.0) is ramp
    assert smooth_below(ramp, 0.0, 5, 2) is ramp
    with pytest.raises(ValueError, match="levels"):
        deband(ramp, -1.0)
    with pytest.raises(ValueError, match="multiple"):
        deband(ramp[..., :30], 1.5)
    with pytest.raises(ValueError, match="subsample"):
        guided_filter(ramp, ramp, 5, 1e-4, subsample=0)
