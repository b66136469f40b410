"""The benchmark generator: determinism across workers, replay, resume after a kill, refusals, CLI."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from degradations.benchmark import BenchmarkConfig, BenchmarkError, generate, replay

from helpers import make_pair_folders

CLI = [sys.executable, "-m", "allinone.cli", "--threads", "1"]


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png")) if ".cache" not in p.parts}


def _cfg(ir_dir, vi_dir, recipes=("haze", "noise", "mixed"), levels=(1, 5)):
    return BenchmarkConfig(ir_dir=str(ir_dir), vi_dir=str(vi_dir), recipes=list(recipes), levels=list(levels), seed=7)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_pair_folders(tmp_path_factory.mktemp("src"), names=("p1", "p2", "p3"))


@pytest.fixture(scope="module")
def reference(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "bench"
    records = generate(_cfg(*pairs), out, workers=1)
    return out, records


def test_layout_manifest_and_readme(reference):
    out, records = reference
    assert len(records) == 3 * 3 * 2
    for recipe in ("haze", "noise", "mixed"):
        for level in (1, 5):
            assert sorted(p.name for p in (out / recipe / str(level) / "vi").iterdir()) == ["p1.png", "p2.png", "p3.png"]
    assert sorted(p.name for p in (out / "clean" / "ir").iterdir()) == ["p1.png", "p2.png", "p3.png"]
    lines = (out / "manifest.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    for key in ("name", "recipe", "level", "steps", "prompt", "levels", "depth_source", "sha256", "outputs"):
        assert key in first
    haze = [json.loads(l) for l in lines if json.loads(l)["recipe"] == "haze"]
    assert all(r["depth_source"] == "heuristic-v1" for r in haze)
    assert all(s["params"] for r in haze for s in r["steps"])
    assert "replay" in (out / "README.md").read_text()
    assert not (out / "manifest.partial.jsonl").exists()


def test_two_workers_write_identical_bytes(pairs, reference, tmp_path, capfd):
    out = tmp_path / "bench2"
    generate(_cfg(*pairs), out, workers=2)
    # What this process logged already (no depth weights, say), a worker does not print again, bare.
    assert "Depth Anything" not in capfd.readouterr().err
    assert _digests(out) == _digests(reference[0])
    assert (out / "manifest.jsonl").read_bytes() == (reference[0] / "manifest.jsonl").read_bytes()


def test_replay_is_bit_exact(reference, tmp_path):
    out, _ = reference
    assert replay(out / "manifest.jsonl", tmp_path / "replayed") == {}
    assert _digests(tmp_path / "replayed") == _digests(out)
    assert (tmp_path / "replayed" / "manifest.jsonl").read_bytes() == (out / "manifest.jsonl").read_bytes()


def test_replay_reports_tampered_parameters(reference, tmp_path):
    out, _ = reference
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    lines = (out / "manifest.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["steps"][0]["params"] = {k: (v * 1.5 if isinstance(v, float) else v)
                                    for k, v in record["steps"][0]["params"].items()}
    lines[0] = json.dumps(record, sort_keys=True)
    (tampered / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (tampered / "run.json").write_text((out / "run.json").read_text())
    mismatched = replay(tampered / "manifest.jsonl", tmp_path / "replayed")
    assert list(mismatched) == [f"{record['recipe']}/{record['level']}/{record['name']}"]
    # A folder with differences must not pass for a copy of the benchmark.
    assert not (tmp_path / "replayed" / "manifest.jsonl").exists()


def test_rerun_resumes_and_refuses_a_different_benchmark(pairs, reference, tmp_path):
    out = tmp_path / "bench"
    cfg = _cfg(*pairs)
    generate(cfg, out)
    # Simulate an interrupted run: drop the final manifest and some images, keep a torn partial line.
    records = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").unlink()
    (out / "manifest.partial.jsonl").write_text("\n".join(records[:5]) + "\n" + records[5][:40])
    (out / "noise" / "5" / "vi" / "p2.png").unlink()
    generate(_cfg(*pairs), out)
    assert _digests(out) == _digests(reference[0])
    with pytest.raises(BenchmarkError, match="different benchmark"):
        generate(_cfg(*pairs, recipes=("night",)), out)
    generate(_cfg(*pairs, recipes=("night",)), out, overwrite=True)
    assert not (out / "haze").exists() and (out / "night").is_dir()


def test_refuses_non_empty_foreign_folder_and_inputs(pairs, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(BenchmarkError, match="not empty"):
        generate(_cfg(*pairs), foreign)
    with pytest.raises(BenchmarkError, match="overlaps"):
        generate(_cfg(*pairs), pairs[0] / "out")
    generate(_cfg(*pairs, recipes=("noise",), levels=(1,)), foreign, overwrite=True)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_kill_then_resume_gives_the_same_bytes(pairs, reference, tmp_path):
    out = tmp_path / "killed"
    ir_dir, vi_dir = pairs
    cmd = CLI + ["degrade", "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(out),
                 "--recipe", "haze,noise,mixed", "--levels", "1,5", "--seed", "7"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "manifest.partial.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.jsonl").exists()
    from degradations.io import read_vis
    for image in out.rglob("*.png"):  # atomic writes: whatever carries an image's name is complete
        read_vis(image)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _digests(out) == _digests(reference[0])
    assert not list(out.rglob("*.tmp"))  # the resumed run removed any temporary file the kill left


def test_cli_errors_are_clear(tmp_path):
    ir_dir, vi_dir = make_pair_folders(tmp_path / "src", names=("a", "b"))
    (vi_dir / "b.png").unlink()
    run = subprocess.run(CLI + ["degrade", "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "b.png" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o").exists()
    (ir_dir / "b.png").unlink()
    (vi_dir / "a.png").write_bytes(b"garbage")
    run = subprocess.run(CLI + ["degrade", "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "a.png" in run.stderr and "Traceback" not in run.stderr


def test_cli_end_to_end_on_real_pairs(eval_subset, tmp_path):
    src = eval_subset("roadscene")
    out = tmp_path / "rs"
    run = subprocess.run(CLI + ["degrade", "--ir", str(src / "ir"), "--vi", str(src / "vi"), "--out", str(out),
                                "--recipe", "night,haze,ir_stripe", "--levels", "3", "--workers", "2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    records = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 8 * 3
    from degradations.io import read_ir, read_vis
    for r in records[:3]:
        clean_vi = read_vis(out / "clean" / "vi" / f"{r['name']}.png")
        deg_vi = read_vis(out / r["outputs"]["vi"])
        assert deg_vi.shape == clean_vi.shape
        assert read_ir(out / r["outputs"]["ir"]).shape[1] == 1
    again = subprocess.run(CLI + ["degrade", "--ir", str(src / "ir"), "--vi", str(src / "vi"), "--out", str(out),
                                  "--recipe", "night", "--levels", "3"], capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr
