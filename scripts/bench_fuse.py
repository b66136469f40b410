"""Size and CPU speed of the fusion model next to the classic baselines, on one 640x480 pair.

Usage:
    python scripts/bench_fuse.py --checkpoint checkpoints/fusion_cnn [--repeats 20] [--csv PATH]

Reports, as a markdown table: parameters; GFLOPs of one 640x480 forward, counted by
torch.utils.flop_counter.FlopCounterMode (FLOPs, one multiply-add = 2 FLOPs, so GMACs are half; only
convolutions and matrix products are counted: elementwise work such as the colour conversion, the mean and
the max counts as 0); the median milliseconds per pair with 1 and 2 threads. A timed call is the whole
model call (padding, embedding of the condition, colour) on tensors already in memory, with a
degradation-label condition. Ours uses its threads as ``allinone fuse --threads N`` does
(FusionPipeline.use_threads): with 2, the model's input priors run in a thread of their own while the
network runs on the other, each with 1 torch thread; the row "ours, one stream" runs everything in the
calling thread with N torch threads, as every operation sharing the threads (the baselines run that way).
With the blind degradation estimator (--estimator, default the shipped one; skipped when absent) a row
"ours, blind" times what ``allinone fuse`` does when told nothing (FusionPipeline.fuse_blind): the estimator
reads the pair (with 2 threads, half its crops in the second thread), then the model fuses it told those
levels. Each method is warmed up first, and the methods
take turns within each repeat so that they share the machine's load. Absolute times depend on the machine
and its load; the ratio of ours to a baseline from the same run is the number to quote. The header gives the
load average and OMP_WAIT_POLICY: with 2 threads on cores that other processes share, OpenMP's default
spin-waiting can slow every op many times over, which OMP_WAIT_POLICY=PASSIVE avoids. Then the peak resident
memory (ru_maxrss) after loading and after the benchmark.

The pair is the first one of <data>/msrs_test (640x480); without the shared data, a seeded random pair.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from allinone.baselines import laplacian_pyramid_fusion, max_fusion, mean_fusion  # noqa: E402
from allinone.conditioning import Condition  # noqa: E402
from allinone.models.fusion_cnn import FusionCNN  # noqa: E402
from allinone.outputs import check_output_file  # noqa: E402
from allinone.pipeline import DEFAULT_ESTIMATOR, FusionPipeline  # noqa: E402
from degradations.io import write_bytes_atomic  # noqa: E402
from degradations.labels import label_vector  # noqa: E402
from degradations.pairs import find_pairs, load_pair  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from script_args import load_model, model_folder, positive_int, usage_error  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("ALLINONE_DATA", REPO.parent / "shared" / "data")) / "eval"
HEIGHT, WIDTH = 480, 640
THREADS = (1, 2)
WARMUP = 3
OURS = "ours"
OURS_ONE_STREAM = "ours, one stream"
OURS_BLIND = "ours, blind"
COLUMNS = ("method", "params", "gflops", "ms_1_thread", "ms_2_threads", "ours_ratio_1_thread", "ours_ratio_2_threads")

Fuse = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Method:
    """A fusion to time, and how it takes a thread count (called before each timed call, outside the timer)."""

    fuse: Fuse
    use_threads: Callable[[int], object] = torch.set_num_threads


def benchmark_pair(data: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(1, 1, 480, 640) IR, (1, 3, 480, 640) VIS and where they come from."""
    folder = data / "msrs_test"
    if (folder / "ir").is_dir():
        pair = find_pairs(folder / "ir", folder / "vi")[0]
        ir, vi = load_pair(pair, "error", None)
        if tuple(vi.shape) == (1, 3, HEIGHT, WIDTH):
            return ir, vi, f"{folder.name}/{pair.name}"
    generator = torch.Generator().manual_seed(0)
    ir = torch.rand(1, 1, HEIGHT, WIDTH, generator=generator)
    vi = torch.rand(1, 3, HEIGHT, WIDTH, generator=generator)
    return ir, vi, "a seeded random pair (shared data not found)"


def count_flops(fuse: Fuse, ir: torch.Tensor, vi: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        fuse(ir, vi)
    return counter.get_total_flops()


def median_ms(methods: dict[str, Method], ir: torch.Tensor, vi: torch.Tensor, threads: int,
              repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each method on ``threads`` threads; the methods alternate within each
    repeat."""
    for method in methods.values():
        method.use_threads(threads)
        for _ in range(WARMUP):
            method.fuse(ir, vi)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            method.use_threads(threads)
            start = time.perf_counter()
            method.fuse(ir, vi)
            times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=model_folder, required=True,
                        help="folder with model.safetensors and config.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval data root (uses msrs_test)")
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed calls per method and thread count")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --csv")
    parser.add_argument("--estimator", type=Path, default=DEFAULT_ESTIMATOR,
                        help="blind degradation estimator for the 'ours, blind' row (skipped when absent)")
    args = parser.parse_args(argv)
    if args.csv is not None:  # before the minutes of timing, not after
        with usage_error(parser):
            check_output_file("--csv", args.csv, inputs=[args.checkpoint, args.data], overwrite=args.overwrite)

    pipeline = FusionPipeline(load_model(parser, FusionCNN, args.checkpoint), estimator_path=args.estimator)
    one_stream = FusionPipeline(FusionCNN.from_pretrained(args.checkpoint))  # never given a prior thread
    ir, vi, source = benchmark_pair(args.data)
    condition = Condition(labels=label_vector({"haze": 3})[None])
    methods: dict[str, Method] = {
        OURS: Method(lambda ir, vi: pipeline.model(ir, vi, condition), pipeline.use_threads),
        OURS_ONE_STREAM: Method(lambda ir, vi: one_stream.model(ir, vi, condition)),
        "mean": Method(mean_fusion),
        "max": Method(max_fusion),
        "laplacian": Method(laplacian_pyramid_fusion),
    }
    size = pipeline.model.num_parameters()
    params = {OURS: size, OURS_ONE_STREAM: size, "mean": 0, "max": 0, "laplacian": 0}
    if pipeline.has_estimator:
        methods[OURS_BLIND] = Method(lambda ir, vi: pipeline.fuse_blind(ir, vi)[0], pipeline.use_threads)
        params[OURS_BLIND] = size + sum(p.numel() for p in pipeline.estimator.parameters())
    loaded_mib = peak_rss_mib()
    load_before = os.getloadavg()[0]

    with torch.inference_mode():
        flops = {name: count_flops(method.fuse, ir, vi) for name, method in methods.items()}
        timings = {threads: median_ms(methods, ir, vi, threads, args.repeats) for threads in THREADS}

    rows = []
    for name in methods:
        row = {"method": name, "params": params[name], "gflops": flops[name] / 1e9}
        for threads, suffix in zip(THREADS, ("1_thread", "2_threads")):
            row[f"ms_{suffix}"] = timings[threads][name]
            row[f"ours_ratio_{suffix}"] = timings[threads][OURS] / timings[threads][name]
        rows.append(row)

    print(f"# Fusion speed, one {WIDTH}x{HEIGHT} pair ({source}); checkpoint {args.checkpoint}\n")
    print(f"median of {args.repeats} calls after {WARMUP} warm-up calls; GFLOPs = FLOPs / 1e9 (FlopCounterMode, "
          f"2 FLOPs per multiply-add; convolutions and matrix products only); {os.cpu_count()} CPUs, "
          f"1-minute load average {load_before:.2f} before and {os.getloadavg()[0]:.2f} after; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}\n")
    print("| method | params | GFLOPs | ms/pair, 1 thread | ms/pair, 2 threads | ours / this, 1 thread "
          "| ours / this, 2 threads |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['params']:,} | {row['gflops']:.3f} | {row['ms_1_thread']:.1f} | "
              f"{row['ms_2_threads']:.1f} | {row['ours_ratio_1_thread']:.2f} | {row['ours_ratio_2_threads']:.2f} |")
    print(f"\npeak resident memory: {loaded_mib:.0f} MiB after loading, {peak_rss_mib():.0f} MiB after the benchmark")
    if args.csv is not None:
        write_csv(args.csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
