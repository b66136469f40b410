"""Haze and mist by the atmospheric scattering model (Koschmieder / McCartney).

Light from a scene point at distance ``d`` is attenuated by ``t = exp(-beta * d)`` on its
way to the camera, and ambient light scattered into the line of sight adds the airlight
``A`` in proportion ``1 - t``:  ``I = J * t + A * (1 - t)``.
"""
from __future__ import annotations

import torch

# Extinction coefficient of long-wave IR relative to visible light, beta_IR / beta_VIS.
# Thermal cameras (8-14 um) see through haze far better than visible cameras (~0.55 um)
# because scattering weakens once particles are small compared with the wavelength. For
# haze aerosols (sub-micron) the Angstrom law, extinction ~ lambda^-q with q ~ 1 to 1.5,
# gives (10 / 0.55)^-1.3 ~ 0.02. Mist and fog droplets have radii of several um, comparable
# to the IR wavelength, and the ratio rises towards 0.3-1. We take 0.1, a middle value for the
# mixed haze/mist of the scenes we synthesise: IR keeps most of its contrast where VIS is
# washed out. For dense fog this underestimates IR degradation (there IR suffers too).
IR_EXTINCTION_RATIO = 0.1


def transmission(depth: torch.Tensor, beta: float) -> torch.Tensor:
    """Fraction of scene radiance surviving the path through the medium, ``exp(-beta * depth)``.

    Args:
        depth: scene distance, shape ``(B, 1, H, W)``; normalised to [0, 1] (0 nearest,
            1 farthest point of the scene), non-negative.
        beta: extinction coefficient in units of 1 / (that depth range), >= 0. ``beta = 1``
            leaves ``1/e`` of the light at the far end; 3 is thick haze (5% survives).

    Returns:
        Transmission in (0, 1], shape of ``depth``.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return torch.exp(-beta * depth)


def haze(
    x: torch.Tensor, depth: torch.Tensor, beta: float, airlight: float | torch.Tensor
) -> torch.Tensor:
    """Add haze: ``I = J * t + A * (1 - t)`` with ``t = transmission(depth, beta)``.

    Apply to IR with ``beta * IR_EXTINCTION_RATIO``. ``beta = 0`` returns the input exactly.

    Args:
        x: clean images ``J``, shape ``(B, C, H, W)``, values in [0, 1].
        depth: normalised scene depth, shape ``(B, 1, H, W)`` (or broadcastable), see
            ``transmission``.
        beta: extinction coefficient, 1 / depth range, >= 0 (0.5 light haze, 3 dense).
        airlight: atmospheric light ``A`` in [0, 1], a float or a ``(B, C, 1, 1)`` tensor
            (e.g. a bluish-grey sky colour); typically 0.7-1.

    Returns:
        Tensor of shape ``(B, C, H, W)`` in [0, 1]; differentiable in ``x`` (and in
        ``depth`` and a tensor ``airlight``).
    """
    t = transmission(depth, beta)
    return (x * t + airlight * (1 - t)).clamp(0.0, 1.0)
