"""The dark channel prior: its window operations against brute force, and exact inversion of the
atmospheric scattering model on a scene that satisfies the prior."""
import pytest
import torch
import torch.nn.functional as F

from allinone.models.dark_channel import (block_min, box_mean, dark_channel, dark_channel_dehaze,
                                          estimate_airlight, patch_min)


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


def test_block_min_matches_brute_force_including_cut_blocks():
    x = torch.rand(2, 3, 10, 13, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = block_min(x, 4)
    assert out.shape == (2, 3, 3, 4)
    for i in range(3):
        for j in range(4):
            torch.testing.assert_close(out[..., i, j], x[..., 4 * i:4 * i + 4, 4 * j:4 * j + 4].amin(dim=(-2, -1)))


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


def test_a_coarse_grid_estimate_inverts_a_smooth_haze_too():
    """Stride 4 (what FusionCNN uses): the same exact inversion away from the sky edge, and an output close to
    the full-resolution estimate everywhere."""
    generator = torch.Generator().manual_seed(4)
    scene = torch.rand(1, 3, 128, 128, generator=generator, dtype=torch.float64) * 0.8
    scene[:, 0] = 0.0
    airlight = torch.tensor([0.9, 0.85, 0.8], dtype=torch.float64).view(1, 3, 1, 1)
    transmission = torch.full((1, 1, 128, 128), 0.4, dtype=torch.float64)
    transmission[..., :32, :] = 0.0
    hazy = scene * transmission + airlight * (1 - transmission)
    fine, _ = dark_channel_dehaze(hazy, omega=1.0, min_transmission=0.05)
    coarse, estimate = dark_channel_dehaze(hazy, omega=1.0, min_transmission=0.05, stride=4)
    assert estimate.shape == transmission.shape
    torch.testing.assert_close(estimate[..., 72:, :], transmission[..., 72:, :])
    torch.testing.assert_close(coarse[..., 72:, :], scene[..., 72:, :])
    assert (coarse - fine).abs().mean() < 0.02
    with pytest.raises(ValueError, match="stride"):
        dark_channel_dehaze(hazy, stride=0)


def test_gray_stays_gray():
    gray = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2)).expand(-1, 3, -1, -1)
    restored, _ = dark_channel_dehaze(gray.contiguous(), patch=5, refine=9)
    assert torch.equal(restored[:, 0], restored[:, 1]) and torch.equal(restored[:, 1], restored[:, 2])


@pytest.mark.parametrize("size", [4, 0])
def test_window_sizes_must_be_odd(size):
    with pytest.raises(ValueError):
        patch_min(torch.rand(1, 1, 8, 8), size)
