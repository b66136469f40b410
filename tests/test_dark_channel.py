"""The dark channel prior: its window operations against brute force, and exact inversion of the
atmospheric scattering model on a scene that satisfies the prior."""
import pytest
import torch
import torch.nn.functional as F

from allinone.models.dark_channel import (box_mean, dark_channel, dark_channel_dehaze, estimate_airlight,
                                          patch_min)


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W, size*size): every window of an edge-replicated x, brute force."""
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return padded.unfold(2, size, 1).unfold(3, size, 1).flatten(-2)


def test_patch_min_and_box_mean_match_brute_force():
    x = torch.rand(2, 3, 19, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(patch_min(x, 5), _windows(x, 5).amin(-1))
    torch.testing.assert_close(box_mean(x, 7), _windows(x, 7).mean(-1))
    assert dark_channel(x, 5).shape == (2, 1, 19, 23)
    torch.testing.assert_close(dark_channel(x, 5), _windows(x.amin(1, keepdim=True), 5).amin(-1))


def test_airlight_is_the_colour_of_the_haziest_pixels():
    rgb = torch.full((1, 3, 40, 50), 0.2)
    rgb[..., :2, :] = torch.tensor([0.9, 0.8, 0.7])[:, None, None]  # 100 pixels of sky: 5% of the image
    airlight = estimate_airlight(rgb, dark_channel(rgb, 1), fraction=0.02)
    torch.testing.assert_close(airlight.flatten(), torch.tensor([0.9, 0.8, 0.7]))


def test_dehazing_inverts_the_scattering_model_where_the_prior_holds():
    generator = torch.Generator().manual_seed(1)
    scene = torch.rand(1, 3, 96, 96, generator=generator, dtype=torch.float64) * 0.8
    scene[:, 0] = 0.0  # one channel dark everywhere: the dark channel of the scene is exactly 0
    airlight = torch.tensor([0.9, 0.85, 0.8], dtype=torch.float64).view(1, 3, 1, 1)
    transmission = torch.full((1, 1, 96, 96), 0.4, dtype=torch.float64)
    transmission[..., :30, :] = 0.0  # dense sky: pure airlight, where the airlight estimate comes from
    hazy = scene * transmission + airlight * (1 - transmission)
    restored, estimate = dark_channel_dehaze(hazy, patch=5, omega=1.0, min_transmission=0.05, refine=9)
    # Far from the sky edge (patch and refinement windows inside the uniform region) the inversion is exact.
    torch.testing.assert_close(estimate[..., 45:, :], transmission[..., 45:, :])
    torch.testing.assert_close(restored[..., 45:, :], scene[..., 45:, :])


def test_gray_stays_gray():
    gray = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2)).expand(-1, 3, -1, -1)
    restored, _ = dark_channel_dehaze(gray.contiguous(), patch=5, refine=9)
    assert torch.equal(restored[:, 0], restored[:, 1]) and torch.equal(restored[:, 1], restored[:, 2])


@pytest.mark.parametrize("size", [4, 0])
def test_window_sizes_must_be_odd(size):
    with pytest.raises(ValueError):
        patch_min(torch.rand(1, 1, 8, 8), size)
