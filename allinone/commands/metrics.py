"""``allinone metrics``: fusion quality metrics of a folder of fused images against their IR/VIS sources."""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from pathlib import Path

import numpy as np

from .. import console


_ROLE_NAMES = {"ir": "IR", "vi": "VIS", "ref": "reference"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "metrics", help="fusion metrics (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, CC, PSNR, NIQE, ...)",
        description="Score every image of --fused against the IR and VIS images of the same file stem, "
                    "with the conventions of the MMIF-CDDFuse evaluator (see allinone.metrics). Prints one "
                    "row per image and the mean row.")
    p.add_argument("--ir", required=True, help="folder of infrared source images")
    p.add_argument("--vi", required=True, help="folder of visible source images")
    p.add_argument("--fused", required=True, help="folder of fused images; its file stems choose the pairs")
    p.add_argument("--ref", default=None, help="folder of reference images: adds PSNR_ref, SSIM_ref (and LPIPS)")
    p.add_argument("--csv", default=None,
                   help="also write the table, mean row last, to this CSV file (its folder is created if missing; "
                        "never a file inside --ir, --vi, --fused or --ref)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV file")
    p.add_argument("--no-niqe", action="store_true", help="skip NIQE (needs basicsr; ~0.3 s per image)")
    p.add_argument("--lpips-backbone", default=None, metavar="PATH",
                   help="local torchvision AlexNet weights for LPIPS against --ref "
                        "(default: $ALLINONE_LPIPS_BACKBONE; LPIPS is skipped when neither is set)")
    p.set_defaults(func=run)


def read_image(path: Path) -> np.ndarray:
    """An 8-bit image as (H, W) or (H, W, 3) uint8 (palette, alpha and CMYK images are converted);
    raises UserError naming the file when it cannot be read or is not 8-bit."""
    from PIL import Image

    from ..cli import UserError

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # PIL raises many types for broken files
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise UserError(f"{path}: {image.mode} pixels; the metrics are defined on 8-bit images")
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "LA", "La") else "RGB")
    return np.asarray(image)


def _format_table(names: list[str], rows: list[tuple[str, dict[str, float]]]) -> str:
    first = max(len("image"), *(len(stem) for stem, _ in rows))
    widths = [max(len(name), 9) for name in names]
    lines = [" ".join([f"{'image':<{first}}"] + [f"{n:>{w}}" for n, w in zip(names, widths)])]
    for stem, scores in rows:
        lines.append(" ".join([f"{stem:<{first}}"] + [f"{scores[n]:>{w}.4f}" for n, w in zip(names, widths)]))
    return "\n".join(lines)


def _csv_bytes(names: list[str], rows: list[tuple[str, dict[str, float]]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", *names])
    for stem, scores in rows:
        writer.writerow([stem, *(repr(float(scores[n])) for n in names)])
    return buffer.getvalue().encode("utf-8")


def run(args: argparse.Namespace) -> int:
    from degradations.io import IMAGE_SUFFIXES, write_bytes_atomic
    from degradations.pairs import images_by_stem
    from tqdm import tqdm

    from ..cli import UserError
    from ..metrics import LPIPS_BACKBONE_ENV, MIN_SIDE, evaluate_fusion, lpips_model, niqe, resolve_lpips_backbone
    from ..outputs import check_output_file

    folders = {"ir": Path(args.ir), "vi": Path(args.vi)}
    if args.ref is not None:
        folders["ref"] = Path(args.ref)
    csv_path = Path(args.csv) if args.csv else None
    if csv_path is not None:
        check_output_file("--csv", csv_path, inputs=[*folders.values(), Path(args.fused)], overwrite=args.overwrite)
    if args.lpips_backbone is not None and args.ref is None:
        raise UserError("--lpips-backbone needs --ref: LPIPS compares each fused image with its reference")
    lpips_backbone = None  # loaded before the first image so that a wrong path or file fails at once
    if args.ref is not None and (args.lpips_backbone is not None or os.environ.get(LPIPS_BACKBONE_ENV)):
        lpips_backbone = resolve_lpips_backbone(args.lpips_backbone)
        try:
            lpips_model(lpips_backbone)
        except ValueError as exc:
            raise UserError(str(exc)) from exc

    fused = images_by_stem(Path(args.fused))
    if not fused:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {args.fused}")
    sources = {role: images_by_stem(folder) for role, folder in folders.items()}
    missing = [f"  {role} for {fused[stem].name}: no {stem}.* in {folders[role]}"
               for stem in fused for role in folders if stem not in sources[role]]
    if missing:
        raise UserError(f"{len(missing)} missing source image(s):\n" + "\n".join(missing))

    rows: list[tuple[str, dict[str, float]]] = []
    for stem in tqdm(sorted(fused), desc="metrics", unit="image", file=sys.stderr):
        image = read_image(fused[stem])
        height, width = image.shape[:2]
        others = {role: read_image(sources[role][stem]) for role in folders}
        for role, other in others.items():
            if other.shape[:2] != image.shape[:2]:
                raise UserError(f"size mismatch: {_ROLE_NAMES[role]} {sources[role][stem]} is "
                                f"{other.shape[1]}x{other.shape[0]} but the fused image {fused[stem]} is "
                                f"{width}x{height}")
        if min(height, width) < MIN_SIDE:  # before numpy and scikit-image fail on it in their own words
            raise UserError(f"{fused[stem]} and its sources are {width}x{height}; the metrics need images of at "
                            f"least {MIN_SIDE}x{MIN_SIDE} pixels (VIF's coarsest scale is empty below that)")
        try:
            scores = evaluate_fusion(image, others["ir"], others["vi"], others.get("ref"),
                                     compute_niqe=False, lpips_backbone=lpips_backbone)
        except ValueError as exc:
            raise UserError(f"{fused[stem]}: {exc}") from exc
        if not args.no_niqe:  # apart from evaluate_fusion, so that its errors (all about NIQE) can say how to skip it
            try:
                scores["NIQE"] = niqe(image)
            except ValueError as exc:
                raise UserError(f"{fused[stem]}: {exc}; pass --no-niqe to skip NIQE") from exc
        rows.append((stem, scores))

    names = list(rows[0][1])
    mean = {n: float(np.mean([scores[n] for _, scores in rows])) for n in names}
    table = rows + [("mean", mean)]
    print(_format_table(names, table))
    if any(not math.isfinite(v) for _, scores in rows for v in scores.values()):
        console.warning("some scores are not finite (constant images give NaN, identical ones inf PSNR)")
    if csv_path is not None:
        write_bytes_atomic(csv_path, _csv_bytes(names, table))
        console.success(f"wrote {csv_path}")
    return 0
