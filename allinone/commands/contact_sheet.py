"""``allinone contact-sheet``: one pair under every recipe at levels 1, 3, 5, as a PNG grid."""
from __future__ import annotations

import argparse
import io
from pathlib import Path

from .. import console


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("contact-sheet", help="PNG grid of one pair under each recipe and level")
    p.add_argument("--ir", required=True, help="clean IR image")
    p.add_argument("--vi", required=True, help="clean VIS image")
    p.add_argument("-o", "--out", required=True, help="output PNG")
    p.add_argument("--recipe", default="all", help="comma-separated recipes or 'all'")
    p.add_argument("--levels", default="1,3,5", help="comma-separated severity levels 1..5 (default: 1,3,5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth-model", default=None, help="local Depth Anything V2 folder (default: heuristic)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def write_contact_sheet(ir_path: Path, vi_path: Path, out: Path, *, recipes: list[str], levels: list[int],
                        seed: int, depth_model: str | None) -> None:
    from degradations.benchmark import depth_estimator
    from degradations.io import write_bytes_atomic
    from degradations.pairs import Pair, load_pair

    from ..contact_sheet import contact_sheet

    pair = Pair(ir_path.stem, ir_path, vi_path)
    ir, vi = load_pair(pair, align="resize", ir_bits=None)
    # float16-rounded like the depth cache of `allinone degrade`, so the sheet shows the same images
    depth = depth_estimator(depth_model)(vi).half().float()
    sheet = contact_sheet(ir, vi, name=pair.name, recipes=recipes, levels=levels, seed=seed, depth=depth)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    write_bytes_atomic(out, buf.getvalue())


def run(args: argparse.Namespace) -> int:
    from ..cli import UserError
    from ..outputs import check_output_file
    from .degrade import check_depth_model, parse_recipes_and_levels

    ir, vi, out = Path(args.ir), Path(args.vi), Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"-o {out}: the contact sheet is a PNG image; give a .png path")
    check_output_file("-o", out, inputs=(ir, vi), overwrite=args.overwrite)
    recipes, levels = parse_recipes_and_levels(args.recipe, args.levels)
    check_depth_model(args.depth_model)
    write_contact_sheet(ir, vi, out, recipes=recipes, levels=levels, seed=args.seed, depth_model=args.depth_model)
    console.success(f"wrote {out}")
    return 0
