"""LPIPS with its backbone read from a local file: what the LPIPS metric and the perceptual loss share.

The ``lpips`` package ships its linear heads but would download the ImageNet backbone (torchvision
AlexNet for ``net='alex'``, VGG16 for ``'vgg'``); allinone never downloads weights, so the backbone comes
from a path given by the caller or ``$ALLINONE_LPIPS_BACKBONE``.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

LPIPS_BACKBONE_ENV = "ALLINONE_LPIPS_BACKBONE"

# lpips slices torchvision's ``features`` Sequential but keeps each layer's index as its name, so
# ``slice2.3.weight`` (lpips trunk) and ``net.slice2.3.weight`` (whole LPIPS) are ``features.3.weight``.
_LPIPS_TRUNK_KEY = re.compile(r"^(?:net\.)?slice\d+\.(\d+\..+)$")


class LPIPSBackboneNotFoundError(FileNotFoundError):
    """The local ImageNet weights of the LPIPS backbone are missing; the message says how to set them."""


def resolve_lpips_backbone(path: str | os.PathLike | None = None, net: str = "alex") -> Path:
    """The local file of ImageNet weights for the LPIPS backbone: ``path`` if given, else
    ``$ALLINONE_LPIPS_BACKBONE``. Raises LPIPSBackboneNotFoundError when neither names a file."""
    chosen = path if path is not None else os.environ.get(LPIPS_BACKBONE_ENV) or None
    if chosen is not None and Path(chosen).is_file():
        return Path(chosen)
    where = f"'{chosen}'" if chosen is not None else "(no path given)"
    example = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}.get(net, "the torchvision checkpoint")
    raise LPIPSBackboneNotFoundError(
        f"LPIPS backbone weights not found at {where}; set {LPIPS_BACKBONE_ENV} or pass --lpips-backbone "
        f"to a local copy of torchvision's ImageNet {net} weights (e.g. {example}); allinone never downloads them")


def load_lpips(backbone_path: str | os.PathLike, net: str = "alex"):
    """A frozen ``lpips.LPIPS`` in eval mode, its backbone loaded from ``backbone_path``.

    The file may hold a torchvision state dict (``features.<i>.*``, classifier ignored), an lpips trunk
    (``slice<k>.<i>.*``) or a whole LPIPS state dict (``net.slice<k>.<i>.*``, heads ignored).
    Raises ValueError when the file is not such a state dict (a PNG, a text file, a pickled model)
    or a backbone layer is missing or has the wrong shape.
    """
    import lpips
    import torch

    with warnings.catch_warnings():
        # lpips calls torchvision's deprecated ``pretrained=False``; pnet_rand keeps it from downloading.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # linear heads ship inside lpips

    def unusable(why: str) -> ValueError:
        return ValueError(f"{backbone_path}: not a usable LPIPS backbone weights file ({why}); it must hold "
                          f"a state dict of torchvision's ImageNet {net} weights")

    try:
        checkpoint = torch.load(backbone_path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # an unreadable file, not a wrong one: its own error names the file and the reason
    except Exception as exc:  # torch raises UnpicklingError, EOFError, KeyError, RuntimeError... on other files
        raise unusable(f"torch.load fails with {type(exc).__name__}") from exc
    if not isinstance(checkpoint, dict):
        raise unusable(f"it holds a {type(checkpoint).__name__}")
    state = {}
    for key, value in checkpoint.items():
        trunk = _LPIPS_TRUNK_KEY.match(key)
        state[f"features.{trunk.group(1)}" if trunk else key] = value
    layers = {name: layer for part in model.net.children() for name, layer in part.named_children()}
    loaded = 0
    for index, layer in layers.items():
        if not list(layer.parameters()):  # ReLU and pooling layers hold no weights
            continue
        prefix = f"features.{index}."
        try:
            layer.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        except RuntimeError as exc:
            raise ValueError(f"{backbone_path}: not torchvision {net} weights (layer features.{index}: {exc})") from exc
        loaded += 1
    if loaded == 0:
        raise ValueError(f"{backbone_path}: no backbone layers found")
    return model.requires_grad_(False).eval()
