"""``allinone demo``: the main job on the shipped sample pairs and weights, nothing to fetch.

1. degrade the sample pairs with the night, haze, noise and mixed recipes at level 3 (a benchmark folder);
2. fuse every degraded pair with the shipped checkpoint, conditioned on the labels in the manifest;
3. draw a contact sheet of one pair under every recipe, and a strip of input / fused results.
Re-running resumes and keeps what exists; ``--overwrite`` redoes everything.
"""
from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from .. import console
from ..cli import RERUN_RESUMES

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SHEET_PAIR = "00055D"  # a daylight MSRS pair: every degradation, low light included, shows on it
DEMO_RECIPES = ["night", "haze", "noise", "mixed"]
DEMO_LEVEL = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="degrade and fuse the shipped sample pairs with the shipped weights",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="allinone_demo", help="output folder (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="worker processes for degrading (default: %(default)s)")
    p.add_argument("--checkpoint", default=None, help="model folder (default: the shipped checkpoints/fusion_cnn)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run, resume_hint=RERUN_RESUMES)


def _fuse_benchmark(bench: Path, records: list[dict], out: Path, pipe, overwrite: bool, threads: int) -> dict:
    """Fuse each degraded pair of the benchmark with ``pipe`` on ``threads`` CPU threads, conditioned on its
    labels; returns a summary."""
    from degradations.io import read_ir, read_vis, write_png
    from degradations.labels import label_vector
    from tqdm.auto import tqdm

    from ..background_io import run_with_background_io
    from ..conditioning import Condition

    pipe.use_threads(threads)

    def target(record: dict) -> Path:
        return out / record["recipe"] / str(record["level"]) / f"{record['name']}.png"

    todo = [record for record in records if overwrite or not target(record).exists()]
    skipped, times = len(records) - len(todo), []

    def fuse(record: dict, pair):
        start = time.perf_counter()
        fused = pipe.fuse_tensors(*pair, Condition(labels=label_vector(record["levels"])[None]))
        times.append(time.perf_counter() - start)
        return fused

    run_with_background_io(
        todo, lambda record: (read_ir(bench / record["outputs"]["ir"]), read_vis(bench / record["outputs"]["vi"])),
        fuse, lambda record, fused: write_png(target(record), fused),
        progress=lambda items: tqdm(items, desc="fusing", unit="pair"))
    return {"checkpoint": str(pipe.checkpoint), "fused": len(todo), "skipped_existing": skipped,
            "ms_per_pair_median": round(1000 * sorted(times)[len(times) // 2], 1) if times else None,
            "threads": threads, "concurrent_priors": pipe.model.prior_executor is not None}


def _strip(bench: Path, fused: Path, records: list[dict], name: str, target: Path) -> None:
    """One row per demo recipe for one pair: degraded VIS, degraded IR, fused."""
    from PIL import Image, ImageDraw

    from degradations.io import write_bytes_atomic

    rows = [r for r in records if r["name"] == name]
    width = 240
    cells = []
    for r in rows:
        images = [Image.open(bench / r["outputs"]["vi"]).convert("RGB"), Image.open(bench / r["outputs"]["ir"]).convert("RGB"),
                  Image.open(fused / r["recipe"] / str(r["level"]) / f"{name}.png").convert("RGB")]
        cells.append([im.resize((width, round(im.height * width / im.width))) for im in images])
    height = cells[0][0].height
    sheet = Image.new("RGB", (3 * width + 100, 20 + len(cells) * (height + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(("degraded VIS", "degraded IR", "fused (allinone)")):
        draw.text((100 + col * width + 4, 4), title, fill="black")
    for row, (r, images) in enumerate(zip(rows, cells)):
        y = 20 + row * (height + 4)
        draw.text((4, y + height // 2), f"{r['recipe']} {r['level']}", fill="black")
        for col, im in enumerate(images):
            sheet.paste(im, (100 + col * width, y))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(target, buf.getvalue())


def run(args: argparse.Namespace) -> int:
    from degradations import benchmark
    from degradations.recipes import RECIPES

    from .contact_sheet import write_contact_sheet
    from ..cli import UserError
    from .degrade import check_workers
    from .fuse import load_pipeline

    check_workers(args.workers)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; the demo writes a folder")
    pipe = load_pipeline(args.checkpoint)  # before the degrade stage: a wrong --checkpoint stops the run at once
    out = Path(args.out)
    cfg = benchmark.BenchmarkConfig(ir_dir=str(SAMPLES / "ir"), vi_dir=str(SAMPLES / "vi"),
                                    recipes=DEMO_RECIPES, levels=[DEMO_LEVEL], seed=0)
    bench = out / "benchmark"
    records = benchmark.generate(cfg, bench, workers=args.workers, overwrite=args.overwrite)
    summary = _fuse_benchmark(bench, records, out / "fused", pipe, args.overwrite, args.threads)

    strip, sheet = out / "fused_examples.png", out / "contact_sheet.png"
    figures = {
        strip: lambda: _strip(bench, out / "fused", records, SHEET_PAIR, strip),
        sheet: lambda: write_contact_sheet(SAMPLES / "ir" / f"{SHEET_PAIR}.png", SAMPLES / "vi" / f"{SHEET_PAIR}.png",
                                           sheet, recipes=list(RECIPES), levels=[1, 3, 5], seed=0, depth_model=None),
    }
    for path, draw in figures.items():
        if path.exists() and not args.overwrite:
            console.warning(f"{path} exists; kept it (pass --overwrite to redraw it)")
        else:
            draw()
    summary.update({"benchmark": str(bench), "degraded_pairs": len(records), "fused_folder": str(out / "fused"),
                    "examples": str(strip), "contact_sheet": str(sheet)})
    console.success(f"{len(records)} degraded sample pairs in {bench}; fused in {out / 'fused'}; "
                    f"see {strip} and {sheet}")
    print(json.dumps(summary))
    return 0
