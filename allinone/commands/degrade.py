"""``allinone degrade``: generate, resume or replay a degraded IR/VIS benchmark."""
from __future__ import annotations

import argparse
import os

from .. import console


def parse_list(text: str, kind=str) -> list:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "degrade", help="generate a degraded benchmark from clean IR/VIS pairs",
        description="Degrade clean IR/VIS pairs with named recipes at several severity levels. "
                    "Re-running the same command resumes an interrupted run.")
    p.add_argument("--ir", help="folder of clean IR images (paired with --vi by file stem)")
    p.add_argument("--vi", help="folder of clean VIS images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--recipe", default="all",
                   help="comma-separated recipes or 'all' (default: all); see --list-recipes")
    p.add_argument("--levels", default="1,3,5", help="comma-separated severity levels 1..5 (default: 1,3,5)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--align", choices=("error", "resize"), default="error",
                   help="IR/VIS size mismatch: fail (default) or resize IR to the VIS size")
    p.add_argument("--ir-bits", type=int, default=None,
                   help="bit depth of 16-bit IR files holding 12/14-bit counts (default: full 16-bit range)")
    p.add_argument("--depth-model", default=None,
                   help="local Depth Anything V2 folder for haze (default: $ALLINONE_DEPTH_MODEL, the local "
                        "HF cache, else a built-in heuristic depth)")
    p.add_argument("--replay", metavar="MANIFEST", help="regenerate the benchmark of MANIFEST bit-exact into --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, different benchmark in --out")
    p.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from degradations import benchmark
    from degradations.recipes import RECIPES

    from ..cli import UserError

    if args.list_recipes:
        for name, degradations in RECIPES.items():
            print(f"{name:14s} {', '.join(degradations) if degradations else '1 to 3 random degradations'}")
        return 0
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.replay:
        mismatched = benchmark.replay(args.replay, args.out, ir_dir=args.ir, vi_dir=args.vi,
                                      workers=args.workers, overwrite=args.overwrite)
        if mismatched:
            console.error(f"{len(mismatched)} item(s) differ from the manifest: {', '.join(mismatched[:10])}")
            return 1
        console.success(f"replayed {args.replay} into {args.out}: every image matches its SHA-256")
        return 0
    if not args.ir or not args.vi:
        raise UserError("--ir and --vi are required (or --replay MANIFEST)")
    recipes = list(RECIPES) if args.recipe == "all" else parse_list(args.recipe)
    try:
        levels = parse_list(args.levels, int)
    except ValueError:
        raise UserError(f"--levels must be comma-separated integers, got {args.levels!r}") from None
    cfg = benchmark.BenchmarkConfig(
        ir_dir=os.path.abspath(args.ir), vi_dir=os.path.abspath(args.vi), recipes=recipes, levels=levels,
        seed=args.seed, align=args.align, ir_bits=args.ir_bits, depth_model=args.depth_model)
    records = benchmark.generate(cfg, args.out, workers=args.workers, overwrite=args.overwrite)
    console.success(f"{len(records)} degraded pairs in {args.out} "
                    f"({len(cfg.pairs)} pairs x {len(recipes)} recipes x {len(levels)} levels); "
                    f"manifest: {os.path.join(args.out, benchmark.MANIFEST)}")
    return 0
