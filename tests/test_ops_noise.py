"""Sensor noise ops, plus the contract every degradation op keeps (shapes, range, seeding)."""
import pytest
import torch

from degradations.blur import gaussian_blur, motion_blur
from degradations.compression import jpeg
from degradations.haze import haze
from degradations.noise import (
    POISSON_NORMAL_APPROX_MIN_COUNT,
    gaussian_noise,
    poisson_noise,
    stripe_noise,
)
from degradations.photometric import low_contrast, low_light, overexposure
from degradations.rain import rain_streaks
from degradations.resample import downsample



def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_std_matches_sigma():
    x = torch.full((1, 1, 256, 256), 0.5)
    out = gaussian_noise(x, 0.05, generator=_gen(0))
    assert (out - x).std().item() == pytest.approx(0.05, rel=0.05)
    assert (out - x).mean().abs().item() < 0.002


@pytest.mark.parametrize(
    ("level", "photons"),
    [(0.2, 20.0), (0.5, 2000.0)],  # 4 photons (exact sampler), 1000 photons (normal law)
)
def test_poisson_noise_mean_and_variance(level, photons):
    x = torch.full((1, 1, 256, 256), level)
    out = poisson_noise(x, photons, generator=_gen(1))
    assert out.mean().item() == pytest.approx(level, rel=0.01)
    assert out.var().item() == pytest.approx(level / photons, rel=0.05)


def test_poisson_noise_is_discrete_in_the_exact_regime_and_signal_dependent():
    photons = 10.0
    assert 0.3 * photons < POISSON_NORMAL_APPROX_MIN_COUNT
    out = poisson_noise(torch.full((1, 1, 64, 64), 0.3), photons, generator=_gen(2))
    counts = out * photons
    torch.testing.assert_close(counts, counts.round(), atol=1e-5, rtol=0)
    # 5 photons (exact sampler) next to 80 (normal law) in one call.
    two_levels = torch.cat([torch.full((1, 1, 64, 64), 0.05), torch.full((1, 1, 64, 64), 0.8)])
    noisy = poisson_noise(two_levels, 100.0, generator=_gen(3))
    dark_std, bright_std = (noisy - two_levels).flatten(1).std(dim=1).tolist()
    assert dark_std == pytest.approx(0.05**0.5 / 10, rel=0.1)
    assert bright_std == pytest.approx(0.8**0.5 / 10, rel=0.1)


def test_stripe_noise_is_constant_down_columns_and_varies_across():
    x = torch.full((2, 3, 40, 64), 0.5)
    out = stripe_noise(x, 0.05, generator=_gen(4))
    offsets = out - x
    assert torch.equal(offsets, offsets[:, :1, :1, :].expand_as(offsets))  # per column, all channels
    across = offsets[:, 0, 0, :]
    assert across.std().item() == pytest.approx(0.05, rel=0.3)
    assert not torch.allclose(across[0], across[1])  # each image has its own pattern


RANDOM_OPS = {
    "gaussian_noise": lambda x, g: gaussian_noise(x, 0.05, generator=g),
    "poisson_noise": lambda x, g: poisson_noise(x, 50.0, generator=g),
    "stripe_noise": lambda x, g: stripe_noise(x, 0.05, generator=g),
    "low_light": lambda x, g: low_light(x, 0.1, 500.0, 0.01, generator=g),
    "rain_streaks": lambda x, g: rain_streaks(x, 0.01, 9.0, 80.0, 0.8, generator=g),
}
DETERMINISTIC_OPS = {
    "gaussian_blur": lambda x: gaussian_blur(x, 2.0),
    "anisotropic_blur": lambda x: gaussian_blur(x, 3.0, 1.0, 0.5),
    "motion_blur": lambda x: motion_blur(x, 17.0, 100.0),
    "jpeg": lambda x: jpeg(x, 20),
    "downsample": lambda x: downsample(x, 4),
    "overexposure": lambda x: overexposure(x, 4.0),
    "low_contrast": lambda x: low_contrast(x, 0.4),
    "haze": lambda x: haze(x, torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 1, *x.shape[-2:]), 2.0, 0.9),
}
ALL_OPS = {
    **{name: (lambda op: lambda x: op(x, _gen(0)))(op) for name, op in RANDOM_OPS.items()},
    **DETERMINISTIC_OPS,
}


@pytest.mark.parametrize("name", sorted(ALL_OPS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_op_keeps_shape_dtype_and_range_on_odd_sizes(name, channels, dtype):
    x = torch.rand(2, channels, 37, 53, generator=_gen(5), dtype=dtype)
    out = ALL_OPS[name](x)
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)  # the op did something


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_same_seed_same_output_different_seed_different(name):
    x = torch.rand(1, 3, 32, 40, generator=_gen(6))
    op = RANDOM_OPS[name]
    assert torch.equal(op(x, _gen(7)), op(x, _gen(7)))
    assert not torch.equal(op(x, _gen(7)), op(x, _gen(8)))
