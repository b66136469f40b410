"""Real JPEG round trip and anti-aliased downsampling."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from degradations.compression import jpeg
from degradations.resample import downsample


REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ALLINONE_DATA", REPO.parent / "shared" / "data"))


def _textured_image() -> torch.Tensor:
    """A real visible image (1, 3, H, W) when the shared data is there, else a synthetic texture."""
    folder = DATA / "eval" / "msrs_test" / "vi"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if files:
        import imageio.v3 as iio

        image = np.asarray(iio.imread(files[0]))[:256, :256]
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        return torch.from_numpy(image[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
    # Photograph-like: smooth shading, textures of several scales and a hard edge, no white noise
    # (which no JPEG quality codes well, so it would hide the quality ordering).
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    channels = [0.45 + 0.15 * torch.sin(xx / 3 + yy / 7 + c) + 0.12 * torch.sin(xx / 11) * torch.cos(yy / 5 + c)
                + 0.15 * (xx > 128) for c in range(3)]
    return torch.stack(channels)[None].clamp(0, 1)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(1 / (a - b).square().mean())).item()


def test_jpeg_error_grows_as_quality_drops():
    x = _textured_image()
    psnr = {q: _psnr(jpeg(x, q), x) for q in (90, 50, 10)}
    assert psnr[90] > psnr[50] + 1 > psnr[10] + 2
    assert psnr[90] > 30


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_keeps_shape_dtype_and_8bit_levels(channels):
    x = torch.rand(2, channels, 37, 53, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = jpeg(x, 75)
    assert out.shape == x.shape and out.dtype == torch.float64
    torch.testing.assert_close(out * 255, (out * 255).round())
    # The two images of the batch are coded separately.
    assert not torch.equal(out[0], out[1])
    with pytest.raises(ValueError):
        jpeg(x, 0)


@pytest.mark.parametrize(("h", "w"), [(64, 80), (37, 53), (3, 5)])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsample_shapes(h, w, factor):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(2))
    assert downsample(x, factor).shape == x.shape
    small = downsample(x, factor, keep_size=False)
    assert small.shape == (2, 3, max(1, h // factor), max(1, w // factor))
    assert small.min() >= 0 and small.max() <= 1


def test_downsample_removes_detail_but_keeps_flat_regions():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 64, 64, generator=g)
    out = downsample(x, 4)
    assert out.diff(dim=-1).square().mean() < 0.2 * x.diff(dim=-1).square().mean()
    assert (out.mean() - x.mean()).abs() < 0.01
    flat = torch.full((1, 3, 37, 53), 0.4)
    torch.testing.assert_close(downsample(flat, 4), flat)
    assert torch.equal(downsample(x, 1), x)
    with pytest.raises(ValueError):
        downsample(x, 1.5)


def test_downsample_gradcheck():
    x = (0.25 + 0.5 * torch.rand(1, 1, 8, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda a: downsample(a, 2), (x.requires_grad_(),))
