"""A PNG grid of one IR/VIS pair under each recipe at several levels."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from degradations.recipes import apply_steps, item_seed, plan
from degradations.io import to_uint8

THUMB_WIDTH = 160
LABEL_WIDTH = 110
HEADER_HEIGHT = 22


def _thumb(x: torch.Tensor, width: int) -> Image.Image:
    arr = to_uint8(x)
    image = Image.fromarray(arr if arr.ndim == 3 else np.stack([arr] * 3, -1))
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.BICUBIC)


def _cell(ir: torch.Tensor, vi: torch.Tensor) -> Image.Image:
    """VIS above IR, each THUMB_WIDTH wide."""
    top, bottom = _thumb(vi, THUMB_WIDTH), _thumb(ir, THUMB_WIDTH)
    cell = Image.new("RGB", (THUMB_WIDTH, top.height + bottom.height), "white")
    cell.paste(top, (0, 0))
    cell.paste(bottom, (0, top.height))
    return cell


def contact_sheet(ir: torch.Tensor, vi: torch.Tensor, *, name: str, recipes: Sequence[str],
                  levels: Sequence[int] = (1, 3, 5), seed: int = 0, depth: torch.Tensor | None = None) -> Image.Image:
    """Rows: recipes; columns: the clean pair, then each level. Each cell shows VIS above IR.

    ``ir`` (1, 1, H, W), ``vi`` (1, C, H, W) in [0, 1]; ``depth`` (1, 1, H, W) is needed for haze recipes.
    Parameters are drawn exactly as ``allinone degrade`` draws them for this pair name and seed.
    """
    clean = _cell(ir, vi)
    gap = 4
    font = ImageFont.load_default()
    width = LABEL_WIDTH + (len(levels) + 1) * (THUMB_WIDTH + gap)
    sheet = Image.new("RGB", (width, HEADER_HEIGHT + len(recipes) * (clean.height + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(["clean", *[f"level {lv}" for lv in levels]]):
        draw.text((LABEL_WIDTH + col * (THUMB_WIDTH + gap) + 4, 5), title, fill="black", font=font)
    for row, recipe in enumerate(recipes):
        y = HEADER_HEIGHT + row * (clean.height + gap)
        draw.text((6, y + clean.height // 2 - 6), recipe, fill="black", font=font)
        sheet.paste(clean, (LABEL_WIDTH, y))
        for col, level in enumerate(levels, start=1):
            p = plan(recipe, level, item_seed(seed, name, recipe, level))
            with torch.inference_mode():
                ir_d, vi_d = apply_steps(p.steps, ir, vi, depth if p.needs_depth else None)
            sheet.paste(_cell(ir_d, vi_d), (LABEL_WIDTH + col * (THUMB_WIDTH + gap), y))
    return sheet
