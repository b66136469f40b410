"""``allinone fuse``: single pairs, folders (resume), videos, bad input, and the JSON summary."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from allinone.cli import main
from allinone.models.fusion_cnn import FusionCNN
from helpers import make_pair_folders

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fusion_cnn")
    FusionCNN("tiny").save_pretrained(folder)
    return folder


@pytest.fixture
def pairs(tmp_path):
    return make_pair_folders(tmp_path / "data")


@pytest.fixture
def fuse(checkpoint, capsys):
    """Run ``allinone --threads 1 fuse ARGS --checkpoint <random tiny model>`` in-process.

    Returns (exit code, summary dict parsed from the last stdout line or None, stderr)."""
    def run(*args):
        code = main(["--threads", "1", "fuse", *map(str, args), "--checkpoint", str(checkpoint)])
        out, err = capsys.readouterr()
        lines = out.strip().splitlines()
        return code, json.loads(lines[-1]) if code == 0 else None, err
    return run


def test_single_pair_writes_the_image_and_summary(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    out, summary_file = tmp_path / "fused" / "a.png", tmp_path / "summary.json"
    code, summary, _ = fuse("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", out,
                            "--degradation", "haze:3,lowlight:2", "--summary", summary_file)
    assert code == 0
    with Image.open(out) as image:
        assert image.mode == "RGB" and image.size == Image.open(vi_dir / "a.png").size
    assert summary["mode"] == "pair" and summary["count"] == 1 and summary["skipped"] == 0
    assert summary["condition"] == {"prompt": None, "degradation": {"haze": 3, "lowlight": 2}}
    assert summary["device"] == "cpu" and summary["threads"] == 1 and summary["ms_per_pair_median"] > 0
    assert summary["concurrent_priors"] is False
    assert json.loads(summary_file.read_text()) == summary


def test_single_output_is_refused_when_it_exists(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    out = tmp_path / "a.jpg"
    out.write_bytes(b"keep me")
    code, _, err = fuse("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", out)
    assert code == 2 and "exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    code, _, _ = fuse("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", out, "--overwrite")
    assert code == 0 and Image.open(out).format == "JPEG"


def test_output_may_not_be_an_input(fuse, pairs):
    ir_dir, vi_dir = pairs
    before = (vi_dir / "a.png").read_bytes()
    code, _, err = fuse("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", vi_dir / "a.png", "--overwrite")
    assert code == 2 and "input" in err and (vi_dir / "a.png").read_bytes() == before
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", ir_dir)
    assert code == 2 and str(ir_dir) in err and len(list(ir_dir.iterdir())) == 3


def test_folder_run_resumes_and_overwrite_redoes(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    out = tmp_path / "out"
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out)
    assert code == 0 and summary["count"] == 3 and summary["skipped"] == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png"]
    kept = (out / "a.png").stat().st_mtime_ns
    (out / "b.png").unlink()  # as if the first run had been interrupted before b
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out)
    assert code == 0 and summary["count"] == 1 and summary["skipped"] == 2 and (out / "b.png").exists()
    assert (out / "a.png").stat().st_mtime_ns == kept
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out, "--overwrite")
    assert code == 0 and summary["count"] == 3 and summary["skipped"] == 0


def test_size_mismatch_names_both_files_unless_resized(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    Image.open(ir_dir / "b.png").resize((24, 20)).save(ir_dir / "b.png")
    code, _, err = fuse("--ir", ir_dir / "b.png", "--vi", vi_dir / "b.png", "-o", tmp_path / "b.png")
    assert code == 2 and str(ir_dir / "b.png") in err and str(vi_dir / "b.png") in err and "--align resize" in err
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "out")
    assert code == 2 and str(ir_dir / "b.png") in err and str(vi_dir / "b.png") in err
    assert not (tmp_path / "out").exists()  # checked before any work
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "out", "--align", "resize")
    assert code == 0 and summary["count"] == 3
    assert Image.open(tmp_path / "out" / "b.png").size == Image.open(vi_dir / "b.png").size


def test_unreadable_file_is_named(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    (vi_dir / "c.png").write_bytes(b"not a png")
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "out")
    assert code == 2 and str(vi_dir / "c.png") in err


def test_a_pair_that_fails_to_decode_mid_run_stops_it_after_the_outputs_before_it(fuse, pairs, tmp_path):
    """b's VIS has a valid header (the size check passes) but its pixel data is cut: the run reads it in the
    background while it fuses a, stops with b named, and leaves a's output complete and nothing else."""
    ir_dir, vi_dir = pairs
    data = (vi_dir / "b.png").read_bytes()
    (vi_dir / "b.png").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out)
    assert code == 2 and str(vi_dir / "b.png") in err
    assert sorted(path.name for path in out.glob("*.png")) == ["a.png"]
    with Image.open(out / "a.png") as image:
        image.load()


def test_missing_partners_are_listed(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    (vi_dir / "c.png").unlink()
    (ir_dir / "a.png").unlink()
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "out")
    assert code == 2 and str(ir_dir / "c.png") in err and str(vi_dir / "a.png") in err


def test_bad_requests_are_user_errors(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir / "a.png", "-o", tmp_path / "x.png")
    assert code == 2 and "two folders" in err
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "out", "--degradation", "smog:3")
    assert code == 2 and "smog" in err
    code, _, err = fuse("--ir", ir_dir / "missing.png", "--vi", vi_dir / "a.png", "-o", tmp_path / "x.png")
    assert code == 2 and "missing.png" in err
    code, _, err = fuse("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", tmp_path / "x.png",
                        "--tile", "16", "--overlap", "0")
    assert code == 2 and "--tile 16 is too small" in err and not (tmp_path / "x.png").exists()


def test_the_summary_may_not_replace_an_input_the_output_or_an_existing_file(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    pair = ("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png")
    before = (ir_dir / "a.png").read_bytes()
    out, existing = tmp_path / "f.png", tmp_path / "old.json"
    existing.write_text("keep me")
    for summary, overwrite, expected in [(ir_dir / "a.png", ("--overwrite",), "is an input"),
                                         (out, (), "is also the output"), (existing, (), "exists")]:
        code, _, err = fuse(*pair, "-o", out, "--summary", summary, *overwrite)
        assert code == 2 and "--summary" in err and expected in err, err
        assert not out.exists()  # refused before any work
    assert (ir_dir / "a.png").read_bytes() == before and existing.read_text() == "keep me"


def test_outputs_that_cannot_be_written_are_named_without_a_traceback(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = fuse("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", blocker / "f.png")
    assert code == 2 and f"{blocker} is a file" in err and "Traceback" not in err
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "out.png")
    assert code == 2 and "output folder" in err and not (tmp_path / "out.png").exists()


def test_write_failures_name_the_target_not_the_temporary_file(tmp_path, monkeypatch, capsys):
    from degradations.io import OutputWriteError, write_bytes_atomic

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".x.png.abc.tmp"))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(OutputWriteError, match=r"x\.png: cannot write \(Permission denied\)") as caught:
        write_bytes_atomic(tmp_path / "x.png", b"data")
    assert ".tmp" not in str(caught.value)


def test_ir_bits_and_an_empty_prompt_are_checked(fuse, pairs, tmp_path, capsys):
    ir_dir, vi_dir = pairs
    pair = ("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", tmp_path / "f.png")
    for bits in ("0", "2000", "twelve"):
        with pytest.raises(SystemExit) as exit_:
            fuse(*pair, "--ir-bits", bits)
        assert exit_.value.code == 2 and "--ir-bits" in capsys.readouterr().err
    code, _, err = fuse(*pair, "--prompt", "  ")
    assert code == 2 and "--prompt is empty" in err and not (tmp_path / "f.png").exists()


def _write_video(path: Path, frames: int, fps: int, seed: int) -> None:
    import imageio.v2 as iio

    rng = np.random.default_rng(seed)
    with iio.get_writer(path, format="FFMPEG", fps=fps, ffmpeg_log_level="error") as writer:
        for _ in range(frames):
            writer.append_data(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def test_videos_with_different_rates_are_paired_by_timestamp(fuse, tmp_path):
    import imageio.v2 as iio

    _write_video(tmp_path / "ir.mp4", frames=10, fps=10, seed=0)  # 1.0 s
    _write_video(tmp_path / "vi.mp4", frames=20, fps=15, seed=1)  # 1.33 s
    out = tmp_path / "fused.mp4"
    code, summary, _ = fuse("--ir", tmp_path / "ir.mp4", "--vi", tmp_path / "vi.mp4", "-o", out)
    assert code == 0
    with iio.get_reader(out, format="FFMPEG") as reader:
        assert reader.count_frames() == 15  # VIS rate over the shorter (IR) duration
        assert reader.get_meta_data()["fps"] == pytest.approx(15)
        assert reader.get_meta_data()["size"] == (32, 32)
    video = summary["video"]
    assert video["ir"]["fps"] == pytest.approx(10) and video["vi"]["fps"] == pytest.approx(15)
    assert video["output"]["frames_written"] == summary["count"] == 15 and video["ended_by"] == "ir"
    assert video["ir"]["frames_read"] == 10 and video["ir_frames_repeated"] == 5
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    code, _, err = fuse("--ir", tmp_path / "ir.mp4", "--vi", tmp_path / "vi.mp4", "-o", out)
    assert code == 2 and "exists" in err


def test_video_sizes_are_checked_before_the_estimator_and_stale_partials_removed(fuse, tmp_path):
    import imageio.v2 as iio

    _write_video(tmp_path / "ir.mp4", frames=3, fps=10, seed=0)
    with iio.get_writer(tmp_path / "vi.mp4", format="FFMPEG", fps=10, ffmpeg_log_level="error") as writer:
        for _ in range(3):
            writer.append_data(np.zeros((48, 32, 3), dtype=np.uint8))
    out = tmp_path / "fused.mp4"
    code, _, err = fuse("--ir", tmp_path / "ir.mp4", "--vi", tmp_path / "vi.mp4", "-o", out)  # blind by default
    assert code == 2 and "--align resize" in err and "Traceback" not in err
    dead = tmp_path / ".fused.999999999.tmp.mp4"  # what a killed run leaves: no process has this id
    dead.write_bytes(b"half a video")
    code, _, _ = fuse("--ir", tmp_path / "ir.mp4", "--vi", tmp_path / "vi.mp4", "-o", out, "--align", "resize")
    assert code == 0 and out.exists() and not dead.exists()


def test_auto_degradation_estimates_each_input_and_reports_it(fuse, pairs, tmp_path):
    from test_degradation_estimator import estimator_seeing

    ir_dir, vi_dir = pairs
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "none", "--degradation", "auto",
                        "--estimator", tmp_path / "missing")
    assert code == 2 and "missing" in err and not (tmp_path / "none").exists()

    estimator_seeing({"haze": 4}).save_pretrained(tmp_path / "estimator")
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "auto", "--degradation", "auto",
                            "--estimator", tmp_path / "estimator")
    assert code == 0 and summary["condition"]["degradation"] == "auto"
    names = sorted(summary["condition"]["estimated"])
    assert names and all(levels == {"haze": 4} for levels in summary["condition"]["estimated"].values())
    code, _, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "told", "--degradation", "haze:4")
    for name in names:  # auto fuses exactly as if told what the estimator saw
        assert np.array_equal(np.asarray(Image.open(tmp_path / "auto" / f"{name}.png")),
                              np.asarray(Image.open(tmp_path / "told" / f"{name}.png")))

    _write_video(tmp_path / "ir.mp4", frames=3, fps=10, seed=0)
    _write_video(tmp_path / "vi.mp4", frames=3, fps=10, seed=1)
    code, summary, _ = fuse("--ir", tmp_path / "ir.mp4", "--vi", tmp_path / "vi.mp4", "-o", tmp_path / "auto.mp4",
                            "--degradation", "auto", "--estimator", tmp_path / "estimator")
    assert code == 0 and summary["condition"]["estimated"] == {"auto": {"haze": 4}}


def test_without_a_condition_it_fuses_blind_and_none_fuses_unconditioned(fuse, pairs, tmp_path, monkeypatch):
    from allinone import pipeline
    from test_degradation_estimator import estimator_seeing

    ir_dir, vi_dir = pairs
    estimator_seeing({"haze": 4}).save_pretrained(tmp_path / "estimator")
    monkeypatch.setattr(pipeline, "DEFAULT_ESTIMATOR", tmp_path / "estimator")
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "default")
    assert code == 0 and summary["condition"]["degradation"] == "auto"
    assert set(map(str, summary["condition"]["estimated"].values())) == {"{'haze': 4}"}
    code, _, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "told", "--degradation", "haze:4")
    names = sorted(path.name for path in (tmp_path / "told").glob("*.png"))
    for name in names:  # the default fuses as if told what the estimator saw
        assert np.array_equal(np.asarray(Image.open(tmp_path / "default" / name)),
                              np.asarray(Image.open(tmp_path / "told" / name)))

    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "none", "--degradation", "none")
    assert code == 0 and summary["condition"] is None
    assert any(not np.array_equal(np.asarray(Image.open(tmp_path / "none" / name)),
                                  np.asarray(Image.open(tmp_path / "told" / name))) for name in names)
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "prompt", "--prompt", "dense fog")
    assert code == 0 and summary["condition"] == {"prompt": "dense fog", "degradation": None}  # told, not blind

    # Without the shipped estimator the default falls back to unconditioned, and says so.
    monkeypatch.setattr(pipeline, "DEFAULT_ESTIMATOR", tmp_path / "absent")
    code, summary, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "fallback")
    assert code == 0 and summary["condition"] is None and "fusing unconditioned" in err
    for name in names:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "fallback" / name)),
                              np.asarray(Image.open(tmp_path / "none" / name)))


def test_entry_point_in_a_subprocess(checkpoint, pairs, tmp_path):
    # What the `allinone` console script runs; the JSON summary must be the last line of the real stdout.
    ir_dir, vi_dir = pairs
    entry = "import sys; from allinone.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", entry, "--threads", "1", "fuse", "--ir", str(ir_dir / "a.png"),
               "--vi", str(vi_dir / "a.png"), "-o", str(tmp_path / "a.png"), "--checkpoint", str(checkpoint)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "NO_COLOR": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["output"] == str(tmp_path / "a.png")
    assert (tmp_path / "a.png").is_file()


def test_two_threads_run_the_priors_concurrently_with_the_same_output(pairs, tmp_path):
    """The shipped model on 2 threads: its input priors get a thread of their own; the image is that of 1 thread."""
    ir_dir, vi_dir = pairs
    outputs = {}
    for threads in ("1", "2"):
        outputs[threads] = tmp_path / f"{threads}.png"
        command = [sys.executable, "-m", "allinone", "--threads", threads, "fuse", "--ir", str(ir_dir / "a.png"),
                   "--vi", str(vi_dir / "a.png"), "-o", str(outputs[threads]), "--degradation", "haze:3"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "NO_COLOR": "1"},
                              timeout=300)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["threads"] == int(threads) and summary["concurrent_priors"] is (threads == "2")
    with Image.open(outputs["1"]) as one, Image.open(outputs["2"]) as two:
        assert np.array_equal(np.asarray(one), np.asarray(two))


def test_two_real_pairs(fuse, eval_subset, tmp_path):
    subset = eval_subset("msrs_test")
    stems = sorted(p.stem for p in (subset / "vi").glob("*.png"))[:2]
    for role in ("ir", "vi"):
        (tmp_path / role).mkdir()
        for stem in stems:
            shutil.copy(subset / role / f"{stem}.png", tmp_path / role / f"{stem}.png")
    code, summary, _ = fuse("--ir", tmp_path / "ir", "--vi", tmp_path / "vi", "-o", tmp_path / "out",
                            "--degradation", "lowlight:3")
    assert code == 0 and summary["count"] == 2
    for stem in stems:
        with Image.open(tmp_path / "vi" / f"{stem}.png") as vi, Image.open(tmp_path / "out" / f"{stem}.png") as fused:
            assert fused.size == vi.size and fused.mode == "RGB"
            assert np.asarray(fused).std() > 5  # a picture, not a flat frame


def test_an_interrupt_promises_a_resume_only_where_rerunning_resumes(fuse, pairs, tmp_path, monkeypatch):
    import allinone.commands.fuse as fuse_command

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fuse_command, "_fuse_pair", interrupt)
    monkeypatch.setattr(fuse_command, "_fuse_folder", interrupt)
    ir_dir, vi_dir = pairs
    code, _, err = fuse("--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", tmp_path / "f.png")
    assert code == 130 and "interrupted" in err and "resume" not in err
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", tmp_path / "out")
    assert code == 130 and "run the same command again to resume" in err


def test_a_folder_fused_with_other_settings_is_not_resumed_into(fuse, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    out = tmp_path / "out"
    code, _, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out, "--degradation", "haze:3")
    assert code == 0
    (out / "b.png").unlink()  # as if interrupted
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out, "--degradation", "noise:2")
    assert code == 2 and "other settings" in err and "degradation was {'haze': 3}" in err
    assert not (out / "b.png").exists()
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out, "--degradation", "haze:3")
    assert code == 0 and summary["count"] == 1 and summary["skipped"] == 2
    code, summary, _ = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out, "--degradation", "noise:2", "--overwrite")
    assert code == 0 and summary["count"] == 3
    (out / ".allinone-fuse.json").write_text("{cut sh")
    code, _, err = fuse("--ir", ir_dir, "--vi", vi_dir, "-o", out, "--degradation", "noise:2")
    assert code == 2 and "cannot read the settings of a fused folder" in err and "Traceback" not in err
