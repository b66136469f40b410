"""Compatibility shims for third-party packages that lag behind the pinned torch/torchvision."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings

_FUNCTIONAL_TENSOR = "torchvision.transforms.functional_tensor"


def import_basicsr() -> types.ModuleType:
    """Import ``basicsr`` (1.4.2, used for its NIQE parameters and implementation) and return it.

    ``import basicsr`` runs ``basicsr/data/degradations.py``, which does
    ``from torchvision.transforms.functional_tensor import rgb_to_grayscale``. torchvision 0.17 removed
    that private module (the function lives on in ``torchvision.transforms.functional``), so with the
    pinned torchvision the whole package fails to import although its metrics never touch that
    function. When the real module is missing we register a one-function stand-in under the old name
    before importing basicsr.

    Install basicsr with ``pip install --no-deps --no-build-isolation basicsr==1.4.2``: its declared
    dependencies (tb-nightly, opencv-python beside opencv-python-headless, lmdb, addict, yapf, ...) are
    not needed by ``basicsr.metrics``, and an isolated build pulls a second torch into the build env.
    """
    if _FUNCTIONAL_TENSOR not in sys.modules and importlib.util.find_spec(_FUNCTIONAL_TENSOR) is None:
        from torchvision.transforms import functional

        shim = types.ModuleType(_FUNCTIONAL_TENSOR)
        shim.__doc__ = "allinone stand-in for the module torchvision 0.17 removed (see allinone._compat)."
        shim.rgb_to_grayscale = functional.rgb_to_grayscale
        sys.modules[_FUNCTIONAL_TENSOR] = shim
    try:
        with warnings.catch_warnings():
            # basicsr 1.4.2 imports from the deprecated scipy.ndimage.filters and distutils namespaces.
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("basicsr")
    except ModuleNotFoundError as exc:
        if exc.name != "basicsr":
            raise
        raise ModuleNotFoundError(
            "basicsr is not installed (needed for NIQE); install it with "
            "`pip install --no-deps --no-build-isolation basicsr==1.4.2`", name="basicsr") from exc
