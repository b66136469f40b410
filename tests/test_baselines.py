import pytest
import torch
from kornia.color import rgb_to_y

from allinone.baselines import (
    is_gray,
    laplacian_pyramid_fusion,
    max_fusion,
    mean_fusion,
    merge_luma_chroma,
    split_luma_chroma,
)

BASELINES = [mean_fusion, max_fusion, laplacian_pyramid_fusion]


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _channels_equal(rgb):
    return torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])


@pytest.mark.parametrize("fuse", BASELINES)
def test_shapes_for_odd_sizes_batches_and_one_channel_vis(fuse):
    ir, vi = _rand(2, 1, 37, 53), _rand(2, 3, 37, 53, seed=1)
    out = fuse(ir, vi)
    assert out.shape == (2, 3, 37, 53)
    assert out.min() >= 0 and out.max() <= 1
    assert fuse(ir, vi[:, :1]).shape == (2, 3, 37, 53)


@pytest.mark.parametrize("fuse", BASELINES)
def test_gray_vis_gives_exactly_gray_output(fuse):
    ir, gray = _rand(2, 1, 24, 40), _rand(2, 1, 24, 40, seed=1)
    assert _channels_equal(fuse(ir, gray.expand(-1, 3, -1, -1)))
    assert _channels_equal(fuse(ir, gray))


def test_is_gray_flags_per_sample():
    colour = _rand(1, 3, 8, 8)
    gray = colour[:, :1].expand(-1, 3, -1, -1)
    assert is_gray(torch.cat([colour, gray])).tolist() == [False, True]


def test_mean_of_constants():
    ir = torch.full((1, 1, 8, 8), 0.2)
    vi = torch.full((1, 3, 8, 8), 0.6)
    torch.testing.assert_close(mean_fusion(ir, vi), torch.full((1, 3, 8, 8), 0.4), rtol=0, atol=1e-6)


def test_max_picks_the_larger_intensity():
    ir, luma = _rand(1, 1, 16, 16), _rand(1, 1, 16, 16, seed=1)
    out = max_fusion(ir, luma.expand(-1, 3, -1, -1))
    torch.testing.assert_close(out[:, :1], torch.maximum(ir, luma), rtol=0, atol=1e-6)


def test_colour_is_kept_from_the_vis_chroma():
    vi = torch.tensor([0.8, 0.4, 0.2]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    luma, chroma = split_luma_chroma(vi)
    # Fusing with an IR equal to the VIS luma changes nothing.
    torch.testing.assert_close(mean_fusion(luma, vi), merge_luma_chroma(luma, chroma))
    torch.testing.assert_close(mean_fusion(luma, vi), vi, rtol=0, atol=1e-3)
    # A brighter IR raises the luma but keeps the chroma.
    _, fused_chroma = split_luma_chroma(max_fusion(luma + 0.1, vi))
    torch.testing.assert_close(fused_chroma, chroma, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (37, 53)])
def test_pyramid_reconstructs_the_input_when_ir_equals_vis_luma(size):
    vi = _rand(2, 3, *size)
    ir = rgb_to_y(vi)
    torch.testing.assert_close(laplacian_pyramid_fusion(ir, vi, levels=4), mean_fusion(ir, vi), rtol=0, atol=1e-5)
    gray = _rand(1, 1, *size, seed=2)
    torch.testing.assert_close(laplacian_pyramid_fusion(gray, gray), gray.expand(-1, 3, -1, -1), rtol=0, atol=1e-5)


def test_pyramid_keeps_the_sharper_detail():
    ir = torch.full((1, 1, 32, 32), 0.5)  # flat
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = (0.5 + 0.2 * (-1.0) ** (rows // 2 + cols // 2)).to(torch.float32)[None, None]  # textured VIS
    fused = laplacian_pyramid_fusion(ir, checker)[:, :1]
    assert fused.std() > 0.9 * checker.std()  # detail kept at full strength
    assert mean_fusion(ir, checker)[:, :1].std() < 0.6 * checker.std()  # averaging halves it
