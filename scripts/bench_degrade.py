"""Throughput of the degradation synthesizer: pairs per second at 640x480 per recipe.

Usage:
    python scripts/bench_degrade.py [--pairs DIR_WITH_ir_AND_vi] [--repeats 20]

For each recipe and torch thread count (1 and 2) it times (a) the ops alone on decoded tensors and
(b) a whole item as `allinone degrade` does it: decode both PNGs, degrade, encode both PNGs. Depth for
haze comes from the heuristic (no depth model), computed once per image as the generator's cache does.
Prints a markdown table and the peak resident memory.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from degradations.depth import DepthEstimator
from degradations.io import encode_png
from degradations.pairs import find_pairs, load_pair
from degradations.recipes import RECIPES, apply_steps, item_seed, plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from script_args import pair_folder, positive_int  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PAIRS = Path(os.environ.get("ALLINONE_DATA", REPO.parent / "shared" / "data")) / "eval" / "msrs_test"


def time_recipe(recipe: str, pairs, loaded, depths, repeats: int, end_to_end: bool) -> float:
    """Median seconds per pair over ``repeats`` items cycling through the pairs and levels 1..5."""
    times = []
    for i in range(repeats):
        pair, depth = pairs[i % len(pairs)], depths[i % len(pairs)]
        p = plan(recipe, i % 5 + 1, item_seed(0, pair.name, recipe, i % 5 + 1))
        start = time.perf_counter()
        ir, vi = load_pair(pair, "error", None) if end_to_end else loaded[pair.name]
        ir_d, vi_d = apply_steps(p.steps, ir, vi, depth if p.needs_depth else None)
        if end_to_end:
            encode_png(ir_d), encode_png(vi_d)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=pair_folder, default=str(DEFAULT_PAIRS),
                        help="folder with ir/ and vi/ (640x480)")
    parser.add_argument("--repeats", type=positive_int, default=20)
    args = parser.parse_args()

    pairs = find_pairs(args.pairs / "ir", args.pairs / "vi")
    loaded = {p.name: load_pair(p, "error", None) for p in pairs}
    estimator = DepthEstimator.load(None)
    depths = [estimator(loaded[p.name][1]) for p in pairs]
    h, w = loaded[pairs[0].name][1].shape[-2:]
    print(f"{len(pairs)} pairs from {args.pairs} ({w}x{h}), {args.repeats} items per cell, depth: {estimator.source}\n")
    print("| recipe | ops, 1 thread | ops, 2 threads | decode+ops+encode, 1 thread | decode+ops+encode, 2 threads |")
    print("|---|---|---|---|---|")
    rows = []
    with torch.inference_mode():
        for recipe in RECIPES:
            cells = []
            for end_to_end in (False, True):
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    seconds = time_recipe(recipe, pairs, loaded, depths, args.repeats, end_to_end)
                    cells.append(1.0 / seconds)
            rows.append(cells)
            print(f"| {recipe} | " + " | ".join(f"{c:.1f} pairs/s" for c in cells) + " |", flush=True)
    # Throughput of an even mix of recipes: the harmonic mean of the rates (total pairs / total time).
    mix = [statistics.harmonic_mean(col) for col in zip(*rows)]
    print("| **all recipes, even mix** | " + " | ".join(f"**{c:.1f}** pairs/s" for c in mix) + " |")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
