"""Haze and mist by the atmospheric scattering model (Koschmieder / McCartney).

Light from a scene point at distance ``d`` is attenuated by ``t = exp(-beta * d)`` on its
way to the camera, and ambient light scattered into the line of sight adds the airlight
``A`` in proportion ``1 - t``:  ``I = J * t + A * (1 - t)``.
"""
from __future__ import annotations

import torch

# Extinction of long-wave IR relative to visible light, beta_IR / beta_VIS, is a severity parameter
# (severity.LEVELS["haze"]["ir_ratio"]) because it depends on the particles, which change with
# density. Thermal cameras (8-14 um) see through haze far better than visible cameras (~0.55 um)
# because scattering weakens once particles are small compared with the wavelength: for haze
# aerosols (sub-micron) the Angstrom law, extinction ~ lambda^-q with q ~ 1 to 1.5, gives
# (10 / 0.55)^-1.3 ~ 0.02. Mist and fog droplets have radii of several um, comparable to the IR
# wavelength, and the ratio rises towards 0.3-1. So light levels (haze) use 0.03-0.12 and the dense
# levels (fog) up to 0.5, where IR loses a good part of its contrast too, as in real fog (the AWFusion
# fog pairs of ../shared/data/eval halve the IR standard deviation).


def transmission(depth: torch.Tensor, beta: float, near: float = 0.0) -> torch.Tensor:
    """Fraction of scene radiance surviving the path through the medium, ``exp(-beta * distance)``.

    The normalised depth map only orders the scene from nearest (0) to farthest (1); the distance
    to the camera is ``near + (1 - near) * depth`` in units of the farthest distance. ``near = 0``
    leaves the nearest point clear (light haze over a scene that starts at the camera);
    a larger ``near`` veils the whole frame, as fog does, while the far end keeps ``exp(-beta)``.

    Args:
        depth: normalised scene depth, shape ``(B, 1, H, W)``, values in [0, 1].
        beta: extinction coefficient in units of 1 / (farthest distance), >= 0. ``beta = 1``
            leaves ``1/e`` of the light at the far end; 3 is thick haze (5% survives).
        near: distance of the nearest scene point as a fraction of the farthest, in [0, 1].

    Returns:
        Transmission in (0, 1], shape of ``depth``.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if not 0.0 <= near <= 1.0:
        raise ValueError(f"near must be in [0, 1], got {near}")
    return torch.exp(-beta * (near + (1.0 - near) * depth))


def haze(
    x: torch.Tensor, depth: torch.Tensor, beta: float, airlight: float | torch.Tensor, near: float = 0.0
) -> torch.Tensor:
    """Add haze: ``I = J * t + A * (1 - t)`` with ``t = transmission(depth, beta, near)``.

    Apply to IR with ``beta`` times the IR extinction ratio. ``beta = 0`` returns the input exactly.

    Args:
        x: clean images ``J``, shape ``(B, C, H, W)``, values in [0, 1].
        depth: normalised scene depth, shape ``(B, 1, H, W)`` (or broadcastable), see
            ``transmission``.
        beta: extinction coefficient, 1 / depth range, >= 0 (0.5 light haze, 3 dense).
        airlight: atmospheric light ``A`` in [0, 1], a float or a ``(B, C, 1, 1)`` tensor
            (e.g. a bluish-grey sky colour); typically 0.7-1.
        near: distance of the nearest scene point as a fraction of the farthest (see ``transmission``).

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1]; differentiable in ``x`` (and in
        ``depth`` and a tensor ``airlight``).
    """
    t = transmission(depth, beta, near)
    return (x * t + airlight * (1 - t)).clamp(0.0, 1.0)
