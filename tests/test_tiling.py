import pytest
import torch

from allinone.models import FusionCNN
from allinone.tiling import blend_ramp, tile_starts, tiled_apply


def _pair(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, height, width, generator=generator), torch.rand(1, 3, height, width, generator=generator)


def _perturbed_model(seed=0, std=0.01):
    torch.manual_seed(seed)
    model = FusionCNN("tiny").eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * std)
    return model


@pytest.mark.parametrize("size, tile, overlap", [(100, 48, 16), (48, 48, 8), (130, 64, 0), (97, 40, 39)])
def test_tiles_cover_the_frame_with_the_requested_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    length = min(tile, size)
    assert starts[0] == 0 and starts[-1] + length == size
    for previous, start in zip(starts, starts[1:]):
        assert previous < start and previous + length - start >= overlap


def test_blend_ramp_is_positive_and_rises_smoothly():
    ramp = blend_ramp(40, 16, ramp_start=True, ramp_end=True)
    assert (ramp > 0).all() and ramp.max() == 1.0
    assert (ramp[:16].diff() > 0).all() and (ramp[-16:].diff() < 0).all()
    assert torch.equal(blend_ramp(40, 16, ramp_start=False, ramp_end=False), torch.ones(40, dtype=ramp.dtype))


def test_pointwise_function_is_reproduced_exactly():
    ir, vi = _pair(100, 130)

    def pointwise(ir_tile, vi_tile):
        return torch.sigmoid(3.0 * ir_tile - vi_tile)

    tiled = tiled_apply(pointwise, ir, vi, tile=48, overlap=16)
    assert tiled.shape == (1, 3, 100, 130)
    torch.testing.assert_close(tiled, pointwise(ir, vi), rtol=0, atol=1e-6)


def test_single_tile_is_exact():
    ir, vi = _pair(40, 56)
    model = _perturbed_model()
    with torch.no_grad():
        assert torch.equal(tiled_apply(model, ir, vi, tile=64, overlap=16), model(ir, vi))


def test_conv_model_tiles_blend_without_visible_seams():
    ir, vi = _pair(160, 256, seed=1)
    model = _perturbed_model(std=0.01)
    with torch.no_grad():
        full = model(ir, vi)
        tiled = tiled_apply(model, ir, vi, tile=128, overlap=48)
        abutting = tiled_apply(model, ir, vi, tile=128, overlap=0)
    assert full.std() > 0.05  # the perturbed model does vary across the frame
    assert (tiled - full).abs().mean() < 1e-2
    # Blending over the overlap is what removes the tile-edge errors.
    assert (tiled - full).abs().mean() < 0.5 * (abutting - full).abs().mean()


def test_invalid_arguments_raise():
    ir, vi = _pair(32, 32)
    with pytest.raises(ValueError):
        tiled_apply(lambda a, b: b, ir, vi, tile=16, overlap=16)
    with pytest.raises(ValueError):
        tiled_apply(lambda a, b: b, ir, vi[..., :31], tile=16, overlap=4)
