"""Draw a training run's loss curve (total and main terms) as a small PNG, with Pillow only.

Usage: python scripts/plot_training_curve.py checkpoints/fusion_cnn/loss_log.csv -o checkpoints/fusion_cnn/training_curve.png
"""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from PIL import Image, ImageDraw

from degradations.io import write_bytes_atomic

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
    parser.add_argument("log", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--window", type=int, default=20, help="moving-average window in log rows")
    args = parser.parse_args()

    rows = list(csv.DictReader(args.log.open()))
    steps = [int(r["step"]) for r in rows]
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
