"""Atmospheric scattering haze and rain streaks."""
import pytest
import torch

from degradations.haze import haze, transmission
from degradations.rain import add_rain_layer, rain_layer, rain_streaks


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _depth(b: int = 2, h: int = 24, w: int = 32) -> torch.Tensor:
    """Depth growing from 0 at the bottom row to 1 at the top row."""
    return torch.linspace(1, 0, h).reshape(1, 1, h, 1).expand(b, 1, h, w)


def test_zero_beta_is_exactly_the_identity():
    x = torch.rand(2, 3, 24, 32, generator=_gen(0))
    assert torch.equal(haze(x, _depth(), 0.0, 0.9), x)
    assert torch.equal(haze(x, _depth(), 0.0, torch.rand(2, 3, 1, 1)), x)


def test_transmission_falls_monotonically_with_depth():
    depth = torch.linspace(0, 1, 50).reshape(1, 1, 1, 50)
    t = transmission(depth, 2.0)
    assert t[..., 0].item() == 1.0
    assert (t.diff(dim=-1) < 0).all()
    assert t[..., -1].item() == pytest.approx(torch.exp(torch.tensor(-2.0)).item())
    assert (transmission(depth, 3.0) <= t).all()


def test_near_veils_the_foreground_and_keeps_the_far_end():
    depth = torch.linspace(0, 1, 50).reshape(1, 1, 1, 50)
    t = transmission(depth, 2.0, near=0.4)
    assert t[..., 0].item() == pytest.approx(torch.exp(torch.tensor(-0.8)).item())
    assert t[..., -1].item() == pytest.approx(torch.exp(torch.tensor(-2.0)).item())
    assert (t.diff(dim=-1) < 0).all() and (t <= transmission(depth, 2.0)).all()
    x = torch.rand(1, 3, 24, 32, generator=_gen(6))
    foggy = haze(x, _depth(1), 2.0, 0.9, near=0.4)
    assert (foggy[:, :, -1] - x[:, :, -1]).abs().mean() > 0.1  # depth 0 row: veiled, unlike near=0
    with pytest.raises(ValueError, match="near"):
        transmission(depth, 2.0, near=1.5)


def test_haze_tends_to_airlight_and_keeps_near_pixels():
    x = torch.rand(2, 3, 24, 32, generator=_gen(1))
    airlight = torch.tensor([0.7, 0.8, 0.9]).reshape(1, 3, 1, 1).expand(2, 3, 1, 1)
    out = haze(x, _depth(), 30.0, airlight)
    torch.testing.assert_close(out[:, :, 0], airlight[:, :, 0].expand(2, 3, 32), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :, -1], x[:, :, -1])  # depth 0: no haze
    # Contrast falls with depth by the transmission.
    light = haze(x, _depth(), 1.0, 0.8)
    row_std = light.std(dim=(1, 3))[0]
    assert row_std[0] < 0.5 * row_std[-1]


def test_smaller_extinction_gives_weaker_haze():
    x = torch.rand(1, 1, 24, 32, generator=_gen(2))
    vis = haze(x, _depth(1), 2.0, 0.9)
    ir = haze(x, _depth(1), 2.0 * 0.1, 0.9)
    assert (ir - x).abs().mean() < 0.2 * (vis - x).abs().mean()


def test_haze_gradcheck():
    x = (0.25 + 0.5 * torch.rand(1, 2, 5, 6, generator=_gen(3), dtype=torch.float64)).requires_grad_()
    depth = torch.rand(1, 1, 5, 6, generator=_gen(4), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: haze(a, depth, 1.5, 0.8), (x,))


def test_rain_adds_brightness_only_on_streaks():
    x = torch.rand(2, 3, 64, 80, generator=_gen(5))
    layer = rain_layer(x.shape, 0.005, 15.0, 80.0, generator=_gen(6))
    out = add_rain_layer(x, layer, 0.8)
    streak, clear = layer > 0.05, layer < 1e-6
    assert streak.any() and clear.any()
    assert (out >= x - 1e-6).all()
    torch.testing.assert_close(out[clear.expand_as(x)], x[clear.expand_as(x)], atol=1e-5, rtol=0)
    assert ((out - x)[streak.expand_as(x)] > 0).all()
    # One draw gives exactly this layer.
    torch.testing.assert_close(rain_streaks(x, 0.005, 15.0, 80.0, 0.8, generator=_gen(6)), out)


def test_rain_layer_shape_range_density_and_direction():
    layer = rain_layer((2, 3, 64, 80), 0.01, 15.0, 90.0, generator=_gen(7))
    assert layer.shape == (2, 1, 64, 80)
    assert layer.min() >= 0 and layer.max() <= 1
    # Streaks are as bright as their drops, not diluted over their length.
    assert layer.max() > 0.5
    # Vertical streaks: intensity changes across columns far more than down rows.
    assert layer.diff(dim=-1).abs().mean() > 3 * layer.diff(dim=-2).abs().mean()
    sparse = rain_layer((1, 64, 80), 0.001, 15.0, 90.0, generator=_gen(7))
    assert (sparse > 0.05).float().mean() < (layer > 0.05).float().mean()
    assert rain_layer((1, 64, 80), 0.0, 15.0, 90.0, generator=_gen(7)).max() < 1e-6


def test_rain_is_the_same_on_every_channel():
    gray = torch.full((1, 3, 32, 40), 0.3)
    out = rain_streaks(gray, 0.01, 9.0, 70.0, 1.0, generator=_gen(8))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert out.max() > 0.6
