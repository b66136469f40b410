"""``allinone demo``: the main job on the shipped sample pairs, no data or weights to fetch."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import console

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SHEET_PAIR = "00055D"  # a daylight MSRS pair: every degradation, low light included, shows on it


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="degrade the shipped sample pairs and write a contact sheet",
        description="Runs allinone on the sample pairs shipped in the package: a degraded benchmark of every "
                    "recipe at levels 1, 3, 5 and a contact sheet of one pair.")
    p.add_argument("--out", default="allinone_demo", help="output folder (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from degradations import benchmark
    from degradations.recipes import RECIPES

    from .contact_sheet import write_contact_sheet

    out = Path(args.out)
    cfg = benchmark.BenchmarkConfig(ir_dir=str(SAMPLES / "ir"), vi_dir=str(SAMPLES / "vi"),
                                    recipes=list(RECIPES), levels=[1, 3, 5], seed=0)
    records = benchmark.generate(cfg, out / "benchmark", workers=args.workers, overwrite=args.overwrite)
    sheet = out / "contact_sheet.png"
    ir_file = next((SAMPLES / "ir").glob(f"{SHEET_PAIR}.*"))
    vi_file = next((SAMPLES / "vi").glob(f"{SHEET_PAIR}.*"))
    if sheet.exists() and not args.overwrite:
        console.warning(f"{sheet} exists; kept it (pass --overwrite to redraw it)")
    else:
        write_contact_sheet(ir_file, vi_file, sheet, recipes=list(RECIPES), levels=[1, 3, 5], seed=0,
                            depth_model=None)
    console.success(f"{len(records)} degraded sample pairs in {out / 'benchmark'}; contact sheet: {sheet}")
    return 0
