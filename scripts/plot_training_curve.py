"""Draw a training run's loss curve (total and main terms) as a small PNG, with Pillow only.

Usage: python scripts/plot_training_curve.py LOG [LOG ...] -o curve.png [--overwrite]

Several logs are stages of one model (a fine-tune continuing a run): they are drawn end to end, steps
counted on from the previous stage, with a grey line where a stage starts (its loss weights may differ,
so the total can jump there).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from allinone.outputs import check_output_file
from degradations.io import write_bytes_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from script_args import existing_file, positive_int, usage_error  # noqa: E402

SERIES = {"total": "black", "gradient": "tab:blue", "ssim_vi": "tab:green", "ssim_ir": "tab:olive",
          "intensity": "tab:red", "max_intensity": "tab:orange"}
COLOURS = {"black": (0, 0, 0), "tab:blue": (31, 119, 180), "tab:green": (44, 160, 44), "tab:olive": (150, 150, 30),
           "tab:red": (214, 39, 40), "tab:orange": (255, 127, 14)}


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the per-batch loss is noisy: every batch mixes recipes and levels)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def has_values(rows: list[dict], name: str) -> bool:
    """Terms that were switched off or absent are logged as empty cells."""
    return all(r.get(name) not in (None, "") for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=existing_file, nargs="+", help="loss_log.csv of each stage, in order")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write (never one of the logs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing -o")
    parser.add_argument("--window", type=positive_int, default=20, help="moving-average window in log rows")
    args = parser.parse_args()
    with usage_error(parser):
        check_output_file("-o", args.out, inputs=args.logs, overwrite=args.overwrite)

    rows, steps, boundaries = [], [], []
    for log in args.logs:
        # A log that a resume appended to before `allinone train` cut it back can repeat its header line and the
        # steps after the last save: skip the header and keep the last row of each step, the one trained on.
        stage = list({int(r["step"]): r for r in csv.DictReader(log.open()) if r["step"].isdigit()}.values())
        if not stage:
            parser.error(f"{log} holds no logged steps (an empty file, or a header only)")
        offset = steps[-1] if steps else 0
        if steps:
            boundaries.append(offset)
        rows += stage
        steps += [offset + int(r["step"]) for r in stage]
    series = {name: smooth([float(r[name]) for r in rows], args.window) for name in SERIES if rows and has_values(rows, name)}
    width, height, margin = 720, 360, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top = max(max(v) for v in series.values())
    x = lambda s: margin + (width - 2 * margin) * (s - steps[0]) / max(1, steps[-1] - steps[0])
    y = lambda v: height - margin - (height - 2 * margin) * v / top
    draw.rectangle([margin, margin, width - margin, height - margin], outline=(160, 160, 160))
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.text((4, y(top * frac) - 6), f"{top * frac:.2f}", fill="black")
        step = steps[0] + frac * (steps[-1] - steps[0])
        draw.text((x(step) - 12, height - margin + 6), f"{int(step)}", fill="black")
    draw.text((width // 2 - 20, height - 18), "step", fill="black")
    label_x, row = float("-inf"), 0
    for number, step in enumerate(boundaries, start=2):
        draw.line([(x(step), margin), (x(step), height - margin)], fill=(160, 160, 160), width=1)
        # Short stages sit closer than a label is wide: such a label drops a line below the previous one.
        row = row + 1 if x(step) - label_x < 50 else 0
        label_x = x(step)
        draw.text((label_x + 4, margin + 4 + 14 * row), f"stage {number}", fill=(120, 120, 120))
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[SERIES[name]]
        draw.line([(x(s), y(v)) for s, v in zip(steps, values)], fill=colour, width=2)
        draw.text((margin + 8 + 110 * i, 8), name, fill=colour)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    write_bytes_atomic(args.out, buf.getvalue())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
