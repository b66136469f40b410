"""sRGB curves, low light, over-exposure and low contrast."""
import pytest
import torch

from degradations.photometric import (
    linear_to_srgb,
    low_contrast,
    low_light,
    overexposure,
    srgb_to_linear,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(2, channels, 48, 64, generator=_gen(seed))


def test_srgb_curves_invert_each_other_and_hit_known_values():
    x = _image()
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5, rtol=0)
    mid = srgb_to_linear(torch.full((1, 3, 1, 1), 0.5))
    torch.testing.assert_close(mid, torch.full_like(mid, 0.2140), atol=1e-4, rtol=0)


@pytest.mark.parametrize("curve", [srgb_to_linear, linear_to_srgb])
def test_srgb_curves_work_channel_wise_for_any_channel_count(curve):
    rgb = _image(3)
    per_channel = torch.cat([curve(rgb[:, i : i + 1]) for i in range(3)], dim=1)
    torch.testing.assert_close(per_channel, curve(rgb))
    assert curve(_image(2)).shape == (2, 2, 48, 64)


def test_low_light_scales_mean_linear_intensity_by_exposure():
    x = _image()
    out = low_light(x, 0.2, 1e6, 0.0, generator=_gen(1), quantize=False)
    ratio = srgb_to_linear(out).mean() / srgb_to_linear(x).mean()
    assert ratio.item() == pytest.approx(0.2, rel=0.02)


def test_low_light_is_noisier_with_fewer_photons_and_quantised():
    flat = torch.full((1, 3, 64, 64), 0.6)
    bright = low_light(flat, 0.1, 1e4, 0.0, generator=_gen(2), quantize=False)
    dark = low_light(flat, 0.1, 1e2, 0.0, generator=_gen(2), quantize=False)
    assert dark.std() > 3 * bright.std()
    quantised = low_light(flat, 0.1, 1e3, 0.01, generator=_gen(3))
    torch.testing.assert_close(quantised * 255, (quantised * 255).round(), atol=1e-4, rtol=0)


def test_low_light_read_noise_adds_variance():
    flat = torch.full((1, 1, 64, 64), 0.5)
    clean = low_light(flat, 0.5, 1e6, 0.0, generator=_gen(4), quantize=False)
    noisy = low_light(flat, 0.5, 1e6, 0.02, generator=_gen(4), quantize=False)
    linear_std = srgb_to_linear(noisy).std().item()
    assert linear_std == pytest.approx(0.02, rel=0.1)
    assert srgb_to_linear(clean).std().item() < 0.2 * linear_std


def test_overexposure_brightens_and_clips_at_saturation():
    x = _image()
    gain = 4.0
    out = overexposure(x, gain)
    assert (out >= x - 1e-6).all()
    saturated = srgb_to_linear(x) * gain >= 1
    assert saturated.any() and (out[saturated] > 1 - 1e-6).all()
    torch.testing.assert_close(
        srgb_to_linear(out)[~saturated], (srgb_to_linear(x) * gain)[~saturated], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(overexposure(x, 1.0), x, atol=1e-5, rtol=0)


def test_low_contrast_scales_std_and_keeps_mean():
    x = _image()
    out = low_contrast(x, 0.3)
    torch.testing.assert_close(out.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))
    ratio = out.std(dim=(-2, -1)) / x.std(dim=(-2, -1))
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.3))
    torch.testing.assert_close(low_contrast(x, 1.0), x)


@pytest.mark.parametrize("bad", [lambda x: low_contrast(x, 0.0), lambda x: overexposure(x, 0.5)])
def test_out_of_range_parameters_are_rejected(bad):
    with pytest.raises(ValueError):
        bad(_image())


def test_low_contrast_gradcheck():
    x = (0.25 + 0.5 * torch.rand(1, 2, 5, 6, generator=_gen(5), dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: low_contrast(a, 0.5), (x,))
