"""``allinone fuse``: fuse an IR/VIS image pair, two folders of pairs, or two videos with the FusionCNN.

The kind of job follows from the inputs: two image files (the output is an image file), two folders
(pairs by file stem, the output is a folder of <stem>.png; existing outputs are skipped, so re-running
an interrupted command resumes it) or two videos (the output is an .mp4 at the VIS frame rate, frames
paired by timestamp, see :mod:`allinone.video`). A JSON summary of what was done is printed as the last
line of stdout, and written to ``--summary`` when given; ``ms_per_pair_median`` times the network, and the blind
estimator when it judges each pair (reading and writing excluded).
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

from .. import console
from ..cli import RERUN_RESUMES, bit_depth


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fuse", help="fuse IR and VIS images, folders of pairs, or videos",
        description="Fuse infrared and visible inputs into colour images with the degradation-aware FusionCNN. "
                    "--ir and --vi are two image files (-o an image file), two folders (pairs by file stem; "
                    "-o a folder of <stem>.png; re-running resumes) or two videos (-o an .mp4). Tell the model "
                    "what is wrong with the inputs with --degradation and/or --prompt; without either, the blind "
                    "degradation estimator judges each input (--degradation auto).")
    p.add_argument("--ir", required=True, help="infrared image, folder of images, or video")
    p.add_argument("--vi", required=True, help="visible image, folder of images, or video")
    p.add_argument("-o", "--out", required=True, help="output image file, folder, or .mp4 (by the kind of input)")
    p.add_argument("--prompt", default=None, help="free-text description of the degradations, e.g. 'dense fog at night'")
    p.add_argument("--degradation", default=None, metavar="NAME:LEVEL,...|auto|none",
                   help="known degradations with levels 1..5, e.g. haze:3,lowlight:2 "
                        "(names: lowlight, overexposure, haze, rain, blur, lowres, noise, jpeg, low_contrast, ir_stripe); "
                        "'' for inputs known to be clean; auto (the default without --prompt): the blind estimator "
                        "judges each pair (a video by its first frames) and the summary lists what it saw; none: "
                        "fuse unconditioned")
    p.add_argument("--checkpoint", default=None,
                   help="model folder with config.json and model.safetensors (default: the shipped checkpoints/fusion_cnn)")
    p.add_argument("--estimator", default=None,
                   help="blind degradation estimator folder for --degradation auto "
                        "(default: the shipped checkpoints/degradation_estimator)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile size in pixels (default: whole frame up to 1024x1024 pixels, 512-pixel tiles beyond; "
                        "0: always the whole frame; else at least 64)")
    p.add_argument("--overlap", type=int, default=32, help="overlap of neighbouring tiles in pixels (default: 32)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="where the model runs; auto picks cuda when available (default: cpu)")
    p.add_argument("--align", choices=("error", "resize"), default="error",
                   help="IR/VIS size mismatch: fail (default) or resize IR to the VIS size")
    p.add_argument("--ir-bits", type=bit_depth, default=None,
                   help="bit depth of 16-bit IR files holding 12/14-bit counts (default: full 16-bit range)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: refuse for a file or video, skip in a folder)")
    p.add_argument("--summary", metavar="FILE.json", default=None,
                   help="also write the JSON summary to this file (it is always printed as the last line of stdout)")
    p.set_defaults(func=run)


# The smallest tile --tile accepts: the model predicts its smooth maps at 1/4 resolution, so a smaller tile
# leaves them a 16x16 view or less, and thousands of tiles per frame.
MIN_TILE = 64


def _kind(path: Path) -> str:
    from degradations.io import IMAGE_SUFFIXES

    from ..video import VIDEO_SUFFIXES

    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else "unknown"


def _check_outputs(mode: str, out: Path, summary: Path | None, inputs: tuple[Path, Path], overwrite: bool) -> None:
    """Fail before any work when an output is of the wrong kind, is an input, or exists (a file or video)."""
    from degradations.io import IMAGE_SUFFIXES

    from ..cli import UserError
    from ..outputs import check_output_file
    from ..video import VIDEO_SUFFIXES

    if mode == "folder":
        if any(out.resolve() == source.resolve() for source in inputs):
            raise UserError(f"-o {out} is an input folder; choose another output folder so the inputs are kept")
        if out.exists() and not out.is_dir():
            raise UserError(f"-o {out} is a file; folder inputs need an output folder")
        if not out.exists() and out.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            raise UserError(f"-o {out}: folder inputs need an output folder, not an image or video file")
    elif mode == "pair" and out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"-o {out}: image inputs need an image output ({', '.join(IMAGE_SUFFIXES)})")
    elif mode == "video" and out.suffix.lower() != ".mp4":
        raise UserError(f"-o {out}: video inputs need an .mp4 output")
    if mode != "folder":
        check_output_file("-o", out, inputs=inputs, overwrite=overwrite)
    if summary is not None:
        check_output_file("--summary", summary, inputs=inputs, overwrite=overwrite, other_outputs=(out,))


def load_pipeline(checkpoint: str | None, device: str = "cpu", estimator: str | None = None):
    """The FusionPipeline of ``--checkpoint`` (default: the shipped one); a folder that holds no usable model is
    a UserError naming it."""
    from ..cli import UserError
    from ..pipeline import DEFAULT_CHECKPOINT, DEFAULT_ESTIMATOR, FusionPipeline

    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    try:
        return FusionPipeline.from_pretrained(path, device=device, estimator_path=estimator or DEFAULT_ESTIMATOR)
    except (ValueError, RuntimeError) as exc:  # wrong model type or version, weights that do not fit the config
        raise UserError(f"--checkpoint {path}: {exc}") from exc


def _device(name: str) -> str:
    import torch

    from ..cli import UserError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return name


def _encode(image, suffix: str) -> bytes:
    """Image bytes in the format of ``suffix``; PNG through the project's fast encoder."""
    from PIL import Image

    from degradations.io import encode_png

    if suffix.lower() == ".png":
        return encode_png(image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=Image.registered_extensions()[suffix.lower()], quality=95)
    return buffer.getvalue()


def _median_ms(milliseconds: list[float]) -> float | None:
    return round(statistics.median(milliseconds), 3) if milliseconds else None


class _Fuser:
    """Fuses pairs with one condition for all or, with ``--degradation auto``, told what the blind estimator sees
    in each (kept in ``estimates`` for the summary); times each call (``milliseconds``)."""

    def __init__(self, pipeline, args, degradation) -> None:
        from ..pipeline import AUTO, make_condition

        self.pipeline, self.args, self.degradation = pipeline, args, degradation
        self.estimates: dict[str, dict[str, int]] | None = {} if degradation == AUTO else None
        self.fixed = None if degradation == AUTO else pipeline.embed(make_condition(args.prompt, degradation), 1)
        self.milliseconds: list[float] = []

    def __call__(self, name: str, ir, vi):
        """The fused pair as an (H, W, 3) uint8 array."""
        from degradations.io import to_uint8

        start = time.perf_counter()
        if self.estimates is None:
            fused = self.pipeline.fuse_tensors(ir, vi, self.fixed, tile=self.args.tile, overlap=self.args.overlap)
        else:
            fused, self.estimates[name] = self.pipeline.fuse_blind(ir, vi, self.args.prompt, tile=self.args.tile,
                                                                   overlap=self.args.overlap)
        self.milliseconds.append(1000.0 * (time.perf_counter() - start))
        return to_uint8(fused.cpu())

    def embedding(self, name: str, ir, vi):
        """The embedding to fuse many frames with: the fixed one, or what the estimator sees in ``ir``, ``vi``."""
        from ..pipeline import make_condition

        if self.estimates is None:
            return self.fixed
        levels = self.estimates[name] = self.pipeline.estimate_degradation(ir, vi)
        return self.pipeline.embed(make_condition(self.args.prompt, levels), 1)


def _fuse_pair(fuser: _Fuser, args, ir: Path, vi: Path, out: Path) -> dict:
    from degradations.io import write_bytes_atomic
    from degradations.pairs import Pair, load_pair

    ir_tensor, vi_tensor = load_pair(Pair(vi.stem, ir, vi), args.align, args.ir_bits)
    write_bytes_atomic(out, _encode(fuser(vi.stem, ir_tensor, vi_tensor), out.suffix))
    return {"count": 1, "skipped": 0, "ms_per_pair_median": _median_ms(fuser.milliseconds)}


# Written into an output folder before its first image: what the images there were fused with, so that a
# resumed run made with other settings is refused instead of mixing two kinds of output in one folder.
FOLDER_SETTINGS = ".allinone-fuse.json"


def _folder_settings(fuser: _Fuser) -> dict:
    """What decides the images of a folder run; model folders resolved, so that two spellings of one agree."""
    args = fuser.args
    return {"checkpoint": str(fuser.pipeline.checkpoint.resolve()),
            "estimator": str(fuser.pipeline.estimator_path.resolve()),
            "degradation": fuser.degradation, "prompt": args.prompt, "align": args.align, "ir_bits": args.ir_bits,
            "tile": args.tile, "overlap": args.overlap}


def _claim_folder(out: Path, settings: dict, overwrite: bool) -> None:
    """Record ``settings`` in ``out``; refuse (without ``overwrite``) a folder fused with other settings, or
    whose record cannot be read."""
    from degradations.io import read_json_object, write_bytes_atomic

    from ..cli import UserError

    record = out / FOLDER_SETTINGS
    if record.is_file() and not overwrite:
        try:
            before = read_json_object(record, "the settings of a fused folder")
        except ValueError as exc:
            raise UserError(f"{exc}; pass --overwrite to redo {out}, or choose another -o") from None
        changed = sorted(key for key in settings.keys() | before.keys() if settings.get(key) != before.get(key))
        if changed:
            was = ", ".join(f"{key} was {before.get(key)!r}" for key in changed)
            raise UserError(f"{out} was fused with other settings ({was}); pass --overwrite to redo it with "
                            "these, or choose another -o")
    write_bytes_atomic(record, (json.dumps(settings, indent=2) + "\n").encode("utf-8"))


def _fuse_folder(fuser: _Fuser, args, ir: Path, vi: Path, out: Path) -> dict:
    """Fuse every pair without an output yet, reading the next pair and writing the last output in the background
    (:mod:`allinone.background_io`); a pair that cannot be read stops the run after the outputs before it."""
    from tqdm import tqdm

    from degradations.io import write_png
    from degradations.pairs import find_pairs, load_pair, require_same_sizes

    from ..background_io import run_with_background_io

    pairs = find_pairs(ir, vi)
    if args.align == "error":
        require_same_sizes(pairs)
    _claim_folder(out, _folder_settings(fuser), args.overwrite)
    todo = [pair for pair in pairs if args.overwrite or not (out / f"{pair.name}.png").exists()]
    run_with_background_io(todo, lambda pair: load_pair(pair, args.align, args.ir_bits),
                           lambda pair, tensors: fuser(pair.name, *tensors),
                           lambda pair, fused: write_png(out / f"{pair.name}.png", fused),
                           progress=lambda items: tqdm(items, desc="fuse", unit="pair", file=sys.stderr))
    return {"pairs": len(pairs), "count": len(todo), "skipped": len(pairs) - len(todo),
            "ms_per_pair_median": _median_ms(fuser.milliseconds)}


def _fuse_video(fuser: _Fuser, args, ir: Path, vi: Path, out: Path) -> dict:
    from ..pipeline import image_to_tensor
    from ..video import first_frame, fuse_videos, probe_pair

    embedding = fuser.fixed
    if embedding is None:  # auto: judge the clip by its first pair of frames
        probe_pair(ir, vi, args.align)  # a size mismatch stops the run here, not in the estimator
        ir_first, vi_first = image_to_tensor(first_frame(ir), "ir"), image_to_tensor(first_frame(vi), "vi")
        if args.align == "resize" and ir_first.shape[-2:] != vi_first.shape[-2:]:
            from degradations.pairs import align_to

            ir_first = align_to(ir_first, tuple(vi_first.shape[-2:]))
        embedding = fuser.embedding(out.stem, ir_first, vi_first)
    report = fuse_videos(fuser.pipeline, ir, vi, out, embedding, tile=args.tile, overlap=args.overlap,
                         align=args.align)
    median = round(report.pop("ms_per_frame_median"), 3)
    return {"count": report["output"]["frames_written"], "skipped": 0, "ms_per_pair_median": median, "video": report}


def run(args: argparse.Namespace) -> int:
    from degradations.labels import parse_degradation_spec

    from ..cli import UserError
    from ..pipeline import AUTO, DEFAULT_TILE, UNCONDITIONED

    start = time.perf_counter()
    ir, vi, out = Path(args.ir), Path(args.vi), Path(args.out)
    for flag, path in (("--ir", ir), ("--vi", vi)):
        if not path.exists():
            raise UserError(f"{flag} {path} does not exist")
    kinds = (_kind(ir), _kind(vi))
    modes = {("image", "image"): "pair", ("folder", "folder"): "folder", ("video", "video"): "video"}
    if kinds not in modes:
        raise UserError(f"--ir and --vi must be two image files, two folders or two videos; got {ir} ({kinds[0]}) "
                        f"and {vi} ({kinds[1]})")
    mode = modes[kinds]
    if ir.resolve() == vi.resolve():
        console.warning(f"--ir and --vi are both {ir}: one image fused with itself")
    if mode == "folder":
        args.resume_hint = RERUN_RESUMES
    if args.prompt is not None and not args.prompt.strip():
        raise UserError("--prompt is empty; describe the degradations, or leave --prompt out")
    if (args.tile is not None and args.tile < 0) or args.overlap < 0:
        raise UserError("--tile and --overlap must be >= 0")
    if args.tile and args.tile < MIN_TILE:
        raise UserError(f"--tile {args.tile} is too small: the model sees each tile at a quarter of its size, so "
                        f"a tile needs at least {MIN_TILE} pixels (0: the whole frame)")
    tile = DEFAULT_TILE if args.tile is None else args.tile
    if tile and args.overlap >= tile:
        raise UserError(f"--overlap {args.overlap} must be smaller than the tile size {tile}")
    # Blind by default: told what the estimator sees, the model beats the unconditioned one on clean, night,
    # synthetic and real fog pairs (docs/BENCHMARKS.md, ours_auto against ours_uncond); only the real rain
    # pairs come out worse.
    blind_by_default = args.degradation is None and args.prompt is None
    if blind_by_default:
        degradation = AUTO
    elif args.degradation in (None, UNCONDITIONED):
        degradation = None
    elif args.degradation == AUTO:
        degradation = AUTO
    else:
        try:
            degradation = parse_degradation_spec(args.degradation)
        except ValueError as exc:
            raise UserError(f"--degradation: {exc}") from None
    summary_path = Path(args.summary) if args.summary else None
    _check_outputs(mode, out, summary_path, (ir, vi), args.overwrite)
    device = _device(args.device)
    pipeline = load_pipeline(args.checkpoint, device=device, estimator=args.estimator)
    checkpoint = pipeline.checkpoint
    pipeline.use_threads(args.threads)
    if degradation == AUTO:
        try:
            pipeline.estimator  # load it now: a missing estimator must stop the run before any output
        except (FileNotFoundError, ValueError) as exc:
            if not blind_by_default or args.estimator:
                raise UserError(f"--degradation auto: {exc}") from None
            console.warning(f"no blind degradation estimator ({exc}); fusing unconditioned "
                            "(--degradation or --prompt tell the model what is wrong)")
            degradation = None
    fuser = _Fuser(pipeline, args, degradation)

    fuse = {"pair": _fuse_pair, "folder": _fuse_folder, "video": _fuse_video}[mode]
    done = fuse(fuser, args, ir, vi, out)
    summary = {
        "command": "fuse",
        "mode": mode,
        "ir": str(ir),
        "vi": str(vi),
        "output": str(out),
        **done,
        "condition": {"prompt": args.prompt, "degradation": degradation,
                      **({"estimated": fuser.estimates} if fuser.estimates is not None else {})}
        if args.prompt or degradation is not None else None,
        "checkpoint": str(checkpoint),
        "device": device,
        "threads": args.threads,
        "concurrent_priors": pipeline.model.prior_executor is not None,
        "tile": args.tile,
        "overlap": args.overlap,
        "align": args.align,
        "seconds": round(time.perf_counter() - start, 3),
    }
    document = json.dumps(summary)
    if summary_path is not None:
        from degradations.io import write_bytes_atomic

        write_bytes_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    skipped = f" ({done['skipped']} skipped: outputs exist; --overwrite redoes them)" if done["skipped"] else ""
    unit = "frames" if mode == "video" else "pair(s)"
    console.success(f"fused {done['count']} {unit} into {out}{skipped}")
    print(document)
    return 0
