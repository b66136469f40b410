"""Figure of the fusion model on a clean daylight pair, a synthetic night pair and a real hazy pair.

Usage:
    python scripts/make_figure.py --checkpoint checkpoints/fusion_cnn -o docs/images/fusion_examples.png
        [--data ../shared/data/eval] [--seed 0] [--tile-width 400]

Row 1: the clean RoadScene pair FLIR_05044 (power lines across a daylight sky, bright in the IR), ours told
the pair is clean; its last column is max-select, the strong baseline on clean pairs.
Row 2: the MSRS day pair 00055D (eval/msrs_test) turned into a night pair by the 'night' recipe at
level 4 (plan seeded by ``item_seed(--seed, "00055D", "night", 4)``); the clean day VIS is the reference.
Row 3: the real hazy pair haze_1 of eval/degraded_awfusion_haze, with its clean VIS reference gt_vi.
Columns: VIS input, IR input, Laplacian-pyramid baseline, ours conditioned on the true degradation labels,
and the clean VIS reference (max-select in the clean row). Each tile has its label on top; the PNG is
written atomically, and an existing -o only with --overwrite.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from allinone.baselines import laplacian_pyramid_fusion, max_fusion  # noqa: E402
from allinone.conditioning import Condition  # noqa: E402
from allinone.models.fusion_cnn import FusionCNN  # noqa: E402
from allinone.outputs import check_output_file  # noqa: E402
from degradations.io import to_uint8, write_bytes_atomic  # noqa: E402
from degradations.labels import label_vector  # noqa: E402
from degradations.pairs import Pair, PairingError, find_pairs, load_pair  # noqa: E402
from degradations.recipes import apply_steps, item_seed, plan  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from script_args import existing_dir, load_model, model_folder, positive_int, usage_error  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("ALLINONE_DATA", REPO.parent / "shared" / "data")) / "eval"
CLEAN_SUBSET, CLEAN_PAIR = "roadscene", "FLIR_05044"
NIGHT_SUBSET, NIGHT_PAIR, NIGHT_RECIPE, NIGHT_LEVEL = "msrs_test", "00055D", "night", 4
HAZE_SUBSET, HAZE_PAIR, HAZE_LEVELS = "degraded_awfusion_haze", "haze_1", {"haze": 5}  # level 5: calibrated to this fog
LABEL_HEIGHT_FRACTION = 0.08  # label strip height relative to the tile width
GAP = 4  # pixels between tiles
BACKGROUND, TEXT_COLOUR = (255, 255, 255), (0, 0, 0)


@dataclass
class Row:
    """One example: inputs, their true degradation levels ({} for a clean pair), a caption, and what the last
    column shows."""

    caption: str
    ir: torch.Tensor
    vi: torch.Tensor
    levels: dict[str, int]
    reference: torch.Tensor
    reference_label: str = "clean VIS reference"


def pair_named(folder: Path, name: str, ir_dir: str = "ir", vi_dir: str = "vi") -> Pair:
    pairs = {pair.name: pair for pair in find_pairs(folder / ir_dir, folder / vi_dir)}
    if name not in pairs:
        raise PairingError(f"pair {name} not found in {folder}")
    return pairs[name]


def clean_row(data: Path) -> Row:
    ir, vi = load_pair(pair_named(data / CLEAN_SUBSET, CLEAN_PAIR), "resize", None)
    return Row(f"clean (RoadScene {CLEAN_PAIR})", ir, vi, {}, max_fusion(ir, vi), "max-select")


def night_row(data: Path, seed: int) -> Row:
    ir, vi = load_pair(pair_named(data / NIGHT_SUBSET, NIGHT_PAIR), "resize", None)
    p = plan(NIGHT_RECIPE, NIGHT_LEVEL, item_seed(seed, NIGHT_PAIR, NIGHT_RECIPE, NIGHT_LEVEL))
    ir_night, vi_night = apply_steps(p.steps, ir, vi)  # the night recipe needs no depth
    return Row(f"synthetic night (level {NIGHT_LEVEL}, MSRS {NIGHT_PAIR})", ir_night, vi_night, p.levels, vi)


def haze_row(data: Path) -> Row:
    folder = data / HAZE_SUBSET
    ir, vi = load_pair(pair_named(folder, HAZE_PAIR), "resize", None)
    _, clean_vi = load_pair(pair_named(folder, HAZE_PAIR, "gt_ir", "gt_vi"), "resize", None)
    return Row(f"real haze (AWFusion {HAZE_PAIR})", ir, vi, HAZE_LEVELS, clean_vi)


def labelled_tile(image: torch.Tensor, label: str, width: int, font: ImageFont.FreeTypeFont) -> Image.Image:
    """The image (1, C, H, W) resized to ``width`` under a white strip holding ``label``."""
    picture = Image.fromarray(to_uint8(image)).convert("RGB")
    height = round(picture.height * width / picture.width)
    picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    strip = round(LABEL_HEIGHT_FRACTION * width)
    tile = Image.new("RGB", (width, strip + height), BACKGROUND)
    tile.paste(picture, (0, strip))
    ImageDraw.Draw(tile).text((width // 2, strip // 2), label, fill=TEXT_COLOUR, font=font, anchor="mm")
    return tile


def row_tiles(model: FusionCNN, row: Row, width: int, font: ImageFont.FreeTypeFont) -> list[Image.Image]:
    condition = Condition(labels=label_vector(row.levels)[None])
    with torch.inference_mode():
        ours = model(row.ir, row.vi, condition)
        baseline = laplacian_pyramid_fusion(row.ir, row.vi)
    spec = ", ".join(f"{name}:{level}" for name, level in row.levels.items())
    ours_label = f"ours, conditioned on {spec}" if spec else "ours, told the pair is clean"
    images = [
        (row.vi, f"VIS input: {row.caption}"),
        (row.ir, "IR input"),
        (baseline, "Laplacian pyramid"),
        (ours, ours_label),
        (row.reference, row.reference_label),
    ]
    return [labelled_tile(image, label, width, font) for image, label in images]


def compose(rows: list[list[Image.Image]]) -> Image.Image:
    """Tiles laid out in a grid, ``GAP`` pixels apart; every row as tall as its tallest tile."""
    width = max(sum(tile.width for tile in row) + GAP * (len(row) - 1) for row in rows)
    heights = [max(tile.height for tile in row) for row in rows]
    figure = Image.new("RGB", (width, sum(heights) + GAP * (len(rows) - 1)), BACKGROUND)
    top = 0
    for row, height in zip(rows, heights):
        left = 0
        for tile in row:
            figure.paste(tile, (left, top))
            left += tile.width + GAP
        top += height + GAP
    return figure


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=model_folder, required=True,
                        help="folder with model.safetensors and config.json")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "images" / "fusion_examples.png")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing -o")
    parser.add_argument("--data", type=existing_dir, default=DEFAULT_DATA, help="eval data root (subset folders)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the night degradation plan")
    parser.add_argument("--tile-width", type=positive_int, default=400,
                        help="width of each image in the figure, pixels")
    args = parser.parse_args(argv)
    with usage_error(parser):
        check_output_file("-o", args.output, inputs=[args.checkpoint, args.data], overwrite=args.overwrite)
    model = load_model(parser, FusionCNN, args.checkpoint)
    with usage_error(parser, "--data", args.data):  # a subset folder or one of the three pairs is missing
        rows = [clean_row(args.data), night_row(args.data, args.seed), haze_row(args.data)]

    # The label font scales with the tile; long labels must fit a tile, hence about 1/24 of its width.
    font = ImageFont.load_default(size=max(8, args.tile_width // 24))
    figure = compose([row_tiles(model, row, args.tile_width, font) for row in rows])
    buffer = io.BytesIO()
    figure.save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(args.output, buffer.getvalue())
    print(f"wrote {args.output} ({figure.width}x{figure.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
