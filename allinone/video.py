"""Fusing an IR video with a VIS video, frame by frame, paired by timestamp.

The two cameras of a rig rarely agree on frame rate or length. The fused video follows the VIS clock:
output frame i (time t_i = i / fps_vi) takes the IR frame nearest in time, j = floor(t_i fps_ir + 1/2),
so a faster IR stream has frames dropped and a slower one has frames repeated; the output stops at the
shorter of the two durations (n / fps of each stream). Frames are decoded and encoded one at a time
by ffmpeg (imageio's FFMPEG plugin, backed by imageio-ffmpeg): memory does not grow with the length.

IR frames are reduced to one channel (Rec. 601 luminance), VIS frames stay RGB (or gray when their
three channels are equal), exactly like still images (:func:`allinone.pipeline.image_to_tensor`).
The output is H.264 (libx264, yuv420p) at the VIS frame rate, written to a temporary file in the same
folder and renamed into place, so an interrupted run never leaves a truncated video behind.
"""
from __future__ import annotations

import glob
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import numpy as np
import torch

from allinone.conditioning import Condition
from allinone.pipeline import DEFAULT_OVERLAP, FusionPipeline, image_to_tensor
from degradations.io import ImageReadError, OutputWriteError, to_uint8
from degradations.pairs import align_to

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg")
# Quality 0..10 of imageio's ffmpeg writer (mapped onto libx264's quantiser); 5 is its default, the fused
# frames carry fine thermal detail worth a little more.
OUTPUT_QUALITY = 8

Frame = TypeVar("Frame")


class VideoReadError(ImageReadError):
    """An input video could not be read; the message names the file."""


def _read_error(path: str | os.PathLike, exc: Exception) -> VideoReadError:
    # imageio appends ffmpeg's whole banner to its messages; its first and last lines say what went wrong.
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("===")]
    reason = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1].strip()}"
    return VideoReadError(f"{path}: cannot read video ({type(exc).__name__}: {reason})")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video: frame rate, duration (None when unknown), (width, height)."""

    path: Path
    fps: float
    duration_s: float | None
    size: tuple[int, int]


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read the metadata of a video without decoding its frames; VideoReadError names the file."""
    import imageio.v2 as iio

    path = Path(path)
    try:
        with iio.get_reader(path, format="FFMPEG") as reader:
            meta = reader.get_meta_data()
    except Exception as exc:  # imageio/ffmpeg raise many types for missing or broken files
        raise _read_error(path, exc) from exc
    fps, duration = meta.get("fps"), meta.get("duration")
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise VideoReadError(f"{path}: the container reports no frame rate")
    duration = float(duration) if duration and math.isfinite(duration) else None
    return VideoInfo(path, float(fps), duration, tuple(meta["size"]))


def probe_pair(ir_path: str | os.PathLike, vi_path: str | os.PathLike, align: str) -> tuple[VideoInfo, VideoInfo]:
    """Probe both videos; unless ``align`` is "resize", frame sizes that differ raise VideoReadError."""
    ir_info, vi_info = probe(ir_path), probe(vi_path)
    if ir_info.size != vi_info.size and align != "resize":
        raise VideoReadError(
            f"IR video {ir_info.path} is {ir_info.size[0]}x{ir_info.size[1]} but VIS video {vi_info.path} is "
            f"{vi_info.size[0]}x{vi_info.size[1]}; pass --align resize to resize IR to the VIS size")
    return ir_info, vi_info


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video one (H, W, 3) uint8 RGB frame at a time."""
    import imageio.v2 as iio

    try:
        reader = iio.get_reader(path, format="FFMPEG")
    except Exception as exc:
        raise _read_error(path, exc) from exc
    with reader:
        yield from reader


def first_frame(path: str | os.PathLike) -> np.ndarray:
    """The first decodable frame of a video, (H, W, 3) uint8 RGB."""
    for frame in iter_frames(path):
        return frame
    raise VideoReadError(f"{path} holds no decodable frame")


@dataclass
class FrameAccounting:
    """What timestamp pairing did: frames read from each stream, fused, repeated or left unused.

    ``ir_frames_repeated`` counts output frames that reuse the IR frame of the previous output frame
    (IR slower than VIS); ``*_frames_unused`` counts frames read but fused with nothing (IR faster than
    VIS, or the frame read past the end of the shorter stream). ``ended_by`` is the stream whose end
    stopped the output ("ir" or "vi").
    """

    ir_frames_read: int = 0
    vi_frames_read: int = 0
    frames_paired: int = 0
    ir_frames_repeated: int = 0
    ir_frames_unused: int = 0
    vi_frames_unused: int = 0
    ended_by: str | None = None


def pair_by_timestamp(
    ir_frames: Iterable[Frame], vi_frames: Iterable[Frame], ir_fps: float, vi_fps: float, accounting: FrameAccounting
) -> Iterator[tuple[Frame, Frame]]:
    """Yield (IR, VIS) pairs on the VIS clock, each VIS frame with the IR frame nearest in time.

    Both streams are consumed lazily, and neither beyond the shorter duration (plus the one frame
    that reveals the end). ``accounting`` is updated as pairs are yielded.
    """
    ir_iter = iter(ir_frames)
    ir_frame, ir_index, ir_used, ir_ended = None, -1, False, False
    for vi_index, vi_frame in enumerate(vi_frames):
        accounting.vi_frames_read += 1
        target = math.floor(vi_index * ir_fps / vi_fps + 0.5)
        while ir_index < target and not ir_ended:
            following = next(ir_iter, None)
            if following is None:
                ir_ended = True
                break
            accounting.ir_frames_read += 1
            accounting.ir_frames_unused += ir_index >= 0 and not ir_used
            ir_frame, ir_index, ir_used = following, ir_index + 1, False
        # Past the end of IR (t_i >= n_ir / fps_ir), or no IR frame at all: the shorter stream is over.
        if ir_frame is None or (ir_ended and vi_index * ir_fps >= (ir_index + 1) * vi_fps):
            accounting.vi_frames_unused += 1
            accounting.ended_by = "ir"
            break
        accounting.ir_frames_repeated += ir_used
        ir_used = True
        accounting.frames_paired += 1
        yield ir_frame, vi_frame
    else:
        accounting.ended_by = "vi"
    accounting.ir_frames_unused += ir_index >= 0 and not ir_used


class _AtomicVideoWriter:
    """H.264 writer that opens on the first frame and renames a temporary file onto ``path`` on success.

    yuv420p, the H.264 flavour every player reads, needs even frame sides: an odd side gets one
    replicated row or column (``size`` is what was written), rather than a rescale of the whole frame.
    The temporary file is named after the process; one left by a process that was killed (no cleanup
    runs on SIGKILL) is removed by the next writer of the same path.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.partial = self._partial_name(os.getpid())
        self.size: tuple[int, int] | None = None
        self._writer = None

    def _partial_name(self, pid: int) -> Path:
        return self.path.with_name(f".{self.path.stem}.{pid}.tmp{self.path.suffix}")

    def _remove_stale_partials(self) -> None:
        pattern = f".{glob.escape(self.path.stem)}.*.tmp{glob.escape(self.path.suffix)}"
        for partial in self.path.parent.glob(pattern):
            pid = partial.name[len(self.path.stem) + 2:].split(".")[0]
            if pid.isdigit() and not _process_exists(int(pid)):
                partial.unlink(missing_ok=True)

    def append(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if height % 2 or width % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        try:
            if self._writer is None:
                import imageio.v2 as iio

                self._remove_stale_partials()
                self.size = (frame.shape[1], frame.shape[0])
                self._writer = iio.get_writer(
                    self.partial, format="FFMPEG", mode="I", fps=self.fps, codec="libx264", pixelformat="yuv420p",
                    quality=OUTPUT_QUALITY, macro_block_size=1, ffmpeg_log_level="error")
            self._writer.append_data(frame)
        except OSError as exc:  # ffmpeg could not create the file: it exits, and the pipe to it breaks
            raise OutputWriteError(f"{self.path}: cannot write video ({_first_line(exc)})") from exc

    def __enter__(self) -> "_AtomicVideoWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None and self._writer is not None:
                os.replace(self.partial, self.path)
        except OSError as error:
            raise OutputWriteError(f"{self.path}: cannot write video ({_first_line(error)})") from error
        finally:
            self.partial.unlink(missing_ok=True)  # renamed away on success; a failed run leaves nothing


def _first_line(exc: OSError) -> str:
    """An OSError's reason without the ffmpeg command line and log that imageio appends to it."""
    return exc.strerror or str(exc).strip().splitlines()[0]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def fuse_videos(
    pipeline: FusionPipeline,
    ir_path: str | os.PathLike,
    vi_path: str | os.PathLike,
    out_path: str | os.PathLike,
    condition: Condition | torch.Tensor | None = None,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    align: str = "error",
    progress: bool = True,
) -> dict:
    """Fuse two videos into ``out_path`` (an .mp4 at the VIS frame rate) and report what was done.

    Args:
        pipeline: the fusion pipeline.
        ir_path, vi_path: the input videos (any container/codec ffmpeg reads).
        out_path: the output video; replaced if it exists (callers decide whether that is allowed).
        condition: a Condition or a precomputed embedding (see :meth:`FusionPipeline.fuse_tensors`).
        tile, overlap: tiling, as in :meth:`FusionPipeline.fuse_tensors`.
        align: IR/VIS frame size mismatch: "error" (VideoReadError naming both files) or "resize".
        progress: show a progress bar on stderr.

    Returns:
        A JSON-ready dict: both streams (path, fps, duration, size, frames read/unused), the output
        (path, fps, frames written, duration), the pairing accounting and the median fusion time per frame.
    """
    from tqdm import tqdm

    ir_info, vi_info = probe_pair(ir_path, vi_path, align)
    if not isinstance(condition, torch.Tensor):
        condition = pipeline.embed(condition, 1)  # once, not per frame
    durations = [d for d in (ir_info.duration_s, vi_info.duration_s) if d is not None]
    expected = round(min(durations) * vi_info.fps) if durations else None
    accounting = FrameAccounting()
    milliseconds = []
    out_path = Path(out_path)
    pairs = pair_by_timestamp(iter_frames(ir_info.path), iter_frames(vi_info.path), ir_info.fps, vi_info.fps, accounting)
    with _AtomicVideoWriter(out_path, vi_info.fps) as writer, tqdm(
        total=expected, desc="fuse video", unit="frame", file=sys.stderr, disable=not progress
    ) as bar:
        for ir_frame, vi_frame in pairs:
            ir, vi = image_to_tensor(ir_frame, "ir"), image_to_tensor(vi_frame, "vi")
            if align == "resize" and ir.shape[-2:] != vi.shape[-2:]:
                ir = align_to(ir, tuple(vi.shape[-2:]))
            start = time.perf_counter()
            fused = pipeline.fuse_tensors(ir, vi, condition, tile=tile, overlap=overlap)
            milliseconds.append(1000.0 * (time.perf_counter() - start))
            writer.append(to_uint8(fused.cpu()))
            bar.update()
        bar.total = bar.n  # the expected count came from container durations, which are approximate
        bar.refresh()
    if accounting.frames_paired == 0:
        raise VideoReadError(f"no frames to fuse: {ir_info.path} and/or {vi_info.path} hold no decodable frame")

    def stream(info: VideoInfo, frames_read: int, frames_unused: int) -> dict:
        return {"path": str(info.path), "fps": info.fps, "duration_s": info.duration_s, "size": list(info.size),
                "frames_read": frames_read, "frames_unused": frames_unused}

    return {
        "ir": stream(ir_info, accounting.ir_frames_read, accounting.ir_frames_unused),
        "vi": stream(vi_info, accounting.vi_frames_read, accounting.vi_frames_unused),
        "output": {"path": str(out_path), "fps": vi_info.fps, "size": list(writer.size),
                   "frames_written": accounting.frames_paired, "duration_s": accounting.frames_paired / vi_info.fps},
        "paired_by": "timestamp: VIS clock, nearest IR frame",
        "ir_frames_repeated": accounting.ir_frames_repeated,
        "ended_by": accounting.ended_by,
        "ms_per_frame_median": statistics.median(milliseconds),
    }
