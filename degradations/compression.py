"""Lossy JPEG compression (block artefacts, ringing, chroma loss) by a real codec round trip."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image to JPEG at ``quality`` and decode it again (libjpeg via Pillow).

    The image is first quantised to 8 bits, as a camera or transmission link would. RGB images
    go through the codec's YCbCr 4:2:0 path, single-channel ones through its grayscale path.
    Not differentiable.

    Args:
        x: images, shape ``(B, C, H, W)`` with ``C`` in {1, 3}, values in [0, 1].
        quality: libjpeg quality, int in 1..100; 90 is near lossless, 10 heavily blocky.

    Returns:
        Tensor of shape ``(B, C, H, W)``, same dtype and device as ``x``, in [0, 1].
    """
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"JPEG needs 1 or 3 channels, got {x.shape[1]}")
    images = (x.detach().clamp(0.0, 1.0) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image in images:
        buffer = io.BytesIO()
        # Pillow, not torchvision.io: torchvision 0.29 deprecates its codecs. 4:2:0 as cameras use.
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            buffer, format="JPEG", quality=int(quality), subsampling=2)
        out = np.asarray(Image.open(buffer))
        decoded.append(torch.from_numpy(out.reshape(image.shape).copy()))
    return torch.stack(decoded).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255
