"""Pairing IR and VIS files by stem, and finding pair folders under a data root."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .io import IMAGE_SUFFIXES, image_size, read_ir, read_vis


class PairingError(ValueError):
    """IR and VIS inputs do not form clean pairs; the message lists the offending files."""


@dataclass(frozen=True)
class Pair:
    name: str
    ir: Path
    vi: Path


def images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of a folder by file stem; PairingError for a missing folder or a shared stem."""
    if not folder.is_dir():
        raise PairingError(f"{folder}: not a folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith("."):
            if path.stem in files:
                raise PairingError(f"{folder}: two images share the stem {path.stem!r}: "
                                   f"{files[path.stem].name}, {path.name}")
            files[path.stem] = path
    return files


def find_pairs(ir_dir: str | os.PathLike, vi_dir: str | os.PathLike) -> list[Pair]:
    """Pair the images of two folders by file stem, sorted by name.

    Raises PairingError listing every unpaired file, or when there is no pair at all.
    """
    ir_files, vi_files = images_by_stem(Path(ir_dir)), images_by_stem(Path(vi_dir))
    only_ir = sorted(set(ir_files) - set(vi_files))
    only_vi = sorted(set(vi_files) - set(ir_files))
    if only_ir or only_vi:
        lines = [f"  IR without VIS: {ir_files[s]}" for s in only_ir]
        lines += [f"  VIS without IR: {vi_files[s]}" for s in only_vi]
        raise PairingError(f"{len(lines)} unpaired file(s):\n" + "\n".join(lines))
    if not ir_files:
        raise PairingError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {ir_dir} and {vi_dir}")
    return [Pair(stem, ir_files[stem], vi_files[stem]) for stem in sorted(ir_files)]


def require_same_sizes(pairs: list[Pair]) -> None:
    """Check from the file headers, before any work, that IR and VIS sizes agree in every pair.

    Raises PairingError listing every pair whose sizes differ, with both files and sizes.
    """
    problems = []
    for pair in pairs:
        ir_size, vi_size = image_size(pair.ir), image_size(pair.vi)
        if ir_size != vi_size:
            problems.append(f"  {pair.name}: IR {pair.ir} is {ir_size[0]}x{ir_size[1]}, "
                            f"VIS {pair.vi} is {vi_size[0]}x{vi_size[1]}")
    if problems:
        raise PairingError(f"{len(problems)} pair(s) with different IR and VIS sizes "
                           "(pass --align resize to resize IR to the VIS size):\n" + "\n".join(problems))


def align_to(ir: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize IR (B, 1, h, w) to the VIS size (H, W) with anti-aliased bicubic interpolation."""
    if tuple(ir.shape[-2:]) == tuple(size):
        return ir
    return F.interpolate(ir, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def discover_pair_folders(root: str | os.PathLike) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds both ``ir/`` and ``vi/``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise PairingError(f"{root}: not a folder")
    found = [p for p in [root, *sorted(root.rglob("*"))] if p.is_dir() and (p / "ir").is_dir() and (p / "vi").is_dir()]
    if not found:
        raise PairingError(f"{root}: no folder with ir/ and vi/ subfolders")
    return found


def align_pair(ir: torch.Tensor, vi: torch.Tensor, align: str, ir_name: str, vi_name: str,
               resize_option: str = "--align resize") -> torch.Tensor:
    """IR resized to the VIS size when ``align == "resize"``; PairingError naming both inputs, and
    ``resize_option`` (how the caller asks for a resize), when the sizes differ and ``align == "error"``."""
    if ir.shape[-2:] == vi.shape[-2:]:
        return ir
    if align != "resize":
        raise PairingError(f"IR {ir_name} is {ir.shape[-1]}x{ir.shape[-2]} but VIS {vi_name} is "
                           f"{vi.shape[-1]}x{vi.shape[-2]}; pass {resize_option} to resize IR to the VIS size")
    return align_to(ir, tuple(vi.shape[-2:]))


def load_pair(pair: Pair, align: str, ir_bits: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a clean pair; IR is resized to the VIS size when ``align == "resize"``."""
    ir, vi = read_ir(pair.ir, bits=ir_bits), read_vis(pair.vi)
    return align_pair(ir, vi, align, str(pair.ir), str(pair.vi)), vi
