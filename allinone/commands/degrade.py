"""``allinone degrade``: generate, resume or replay a degraded IR/VIS benchmark."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import console
from ..cli import RERUN_RESUMES, bit_depth

# The options that define a benchmark, with their defaults. They default to None in the parser so that
# --replay, which takes them from the manifest's run.json, can tell that one was given.
GENERATION_DEFAULTS = {"recipe": "all", "levels": "1,3,5", "seed": 0, "align": "error", "ir_bits": None,
                       "depth_model": None}


def parse_list(text: str, kind=str) -> list:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def _unique(flag: str, text: str, values: list) -> list:
    """``values`` without repeats, in order; UserError when there is none, a warning when a repeat is dropped."""
    from ..cli import UserError

    if not values:
        raise UserError(f"{flag} {text!r} names nothing; give at least one value")
    unique = list(dict.fromkeys(values))
    if len(unique) < len(values):
        console.warning(f"{flag} {text!r} repeats a value; each is used once: {','.join(map(str, unique))}")
    return unique


def parse_recipes_and_levels(recipe: str, levels: str) -> tuple[list[str], list[int]]:
    """The --recipe and --levels options as lists, checked before any work: known recipes, levels 1..5."""
    from degradations.benchmark import check_recipes_and_levels
    from degradations.recipes import RECIPES

    from ..cli import UserError

    recipes = list(RECIPES) if recipe == "all" else _unique("--recipe", recipe, parse_list(recipe))
    try:
        level_list = _unique("--levels", levels, parse_list(levels, int))
    except ValueError:
        raise UserError(f"--levels must be comma-separated integers, got {levels!r}") from None
    check_recipes_and_levels(recipes, level_list)
    return recipes, level_list


def check_workers(workers: int) -> None:
    """--workers of degrade and demo: at least one process."""
    from ..cli import UserError

    if workers < 1:
        raise UserError("--workers must be at least 1")


def check_depth_model(path: str | None) -> None:
    """An explicitly given --depth-model must be a folder; only the default lookup falls back to the heuristic."""
    from ..cli import UserError

    if path is not None and not Path(path).is_dir():
        raise UserError(f"--depth-model {path}: {'not a folder' if Path(path).exists() else 'does not exist'} "
                        "(give a local Depth Anything V2 model folder, or leave the option out)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "degrade", help="generate a degraded benchmark from clean IR/VIS pairs",
        description="Degrade clean IR/VIS pairs with named recipes at several severity levels. "
                    "Re-running the same command resumes an interrupted run.")
    p.add_argument("--ir", help="folder of clean IR images (paired with --vi by file stem)")
    p.add_argument("--vi", help="folder of clean VIS images")
    p.add_argument("--out", help="output folder (required unless --list-recipes)")
    p.add_argument("--recipe", help="comma-separated recipes or 'all' (default: all); see --list-recipes")
    p.add_argument("--levels", help="comma-separated severity levels 1..5 (default: 1,3,5)")
    p.add_argument("--seed", type=int, help="master seed (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--align", choices=("error", "resize"),
                   help="IR/VIS size mismatch: fail (default) or resize IR to the VIS size")
    p.add_argument("--ir-bits", type=bit_depth,
                   help="bit depth of 16-bit IR files holding 12/14-bit counts (default: full 16-bit range)")
    p.add_argument("--depth-model",
                   help="local Depth Anything V2 folder for haze (default: $ALLINONE_DEPTH_MODEL, the local "
                        "HF cache, else a built-in heuristic depth)")
    p.add_argument("--replay", metavar="MANIFEST",
                   help="regenerate the benchmark of MANIFEST bit-exact into --out, with the recipes, levels and "
                        "other options of its run.json (--ir/--vi: where its clean sources are now)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, different benchmark in --out")
    p.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    p.set_defaults(func=run, resume_hint=RERUN_RESUMES)


def run(args: argparse.Namespace) -> int:
    from degradations import benchmark
    from degradations.recipes import RECIPES

    from ..cli import UserError

    if args.list_recipes:
        for name, degradations in RECIPES.items():
            print(f"{name:14s} {', '.join(degradations) if degradations else '1 to 3 random degradations'}")
        return 0
    if not args.out:
        raise UserError("--out is required")
    check_workers(args.workers)
    if args.replay:
        given = [f"--{name.replace('_', '-')}" for name in GENERATION_DEFAULTS if getattr(args, name) is not None]
        if given:
            raise UserError(f"--replay takes the recipes, levels and other options from the run.json next to "
                            f"{args.replay}; leave out {', '.join(given)}")
        mismatched = benchmark.replay(args.replay, args.out, ir_dir=args.ir, vi_dir=args.vi,
                                      workers=args.workers, overwrite=args.overwrite)
        if mismatched:
            items = [f"{key} (from {pair.ir} and {pair.vi})" for key, pair in list(mismatched.items())[:10]]
            console.error(f"{len(mismatched)} item(s) differ from the manifest: {', '.join(items)}; "
                          f"no {benchmark.MANIFEST} written in {args.out}, which is not a copy of the benchmark")
            return 1
        console.success(f"replayed {args.replay} into {args.out}: every image matches its SHA-256")
        return 0
    for name, default in GENERATION_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not args.ir or not args.vi:
        raise UserError("--ir and --vi are required (or --replay MANIFEST)")
    recipes, levels = parse_recipes_and_levels(args.recipe, args.levels)
    check_depth_model(args.depth_model)
    cfg = benchmark.BenchmarkConfig(
        ir_dir=os.path.abspath(args.ir), vi_dir=os.path.abspath(args.vi), recipes=recipes, levels=levels,
        seed=args.seed, align=args.align, ir_bits=args.ir_bits,
        depth_model=os.path.abspath(args.depth_model) if args.depth_model else None)
    records = benchmark.generate(cfg, args.out, workers=args.workers, overwrite=args.overwrite)
    console.success(f"{len(records)} degraded pairs in {args.out} "
                    f"({len(cfg.pairs)} pairs x {len(recipes)} recipes x {len(levels)} levels); "
                    f"manifest: {os.path.join(args.out, benchmark.MANIFEST)}")
    return 0
