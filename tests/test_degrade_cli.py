"""Bad input to ``allinone degrade``, ``contact-sheet`` and ``demo``: a clear error before any output."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allinone.cli import main
from degradations.benchmark import BenchmarkConfig, generate
from helpers import make_pair_folders


@pytest.fixture
def pairs(tmp_path):
    return make_pair_folders(tmp_path / "src", names=("a", "b"), size=(32, 24))


@pytest.fixture
def cli(capsys):
    """Run ``allinone --threads 1 ARGS`` in-process; returns (exit code, stdout, stderr)."""
    def run(*args):
        code = main(["--threads", "1", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def benchmark(pairs, tmp_path):
    """A small finished benchmark (noise, level 1) of ``pairs``; returns its manifest."""
    ir_dir, vi_dir = pairs
    out = tmp_path / "bench"
    generate(BenchmarkConfig(ir_dir=str(ir_dir), vi_dir=str(vi_dir), recipes=["noise"], levels=[1]), out)
    return out / "manifest.jsonl"


def _change_pixel(path: Path) -> None:
    arr = np.array(Image.open(path))
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(path)


# --- contact-sheet ---------------------------------------------------------------------------------------

def test_contact_sheet_never_replaces_an_input(cli, pairs):
    ir_dir, vi_dir = pairs
    before = (ir_dir / "a.png").read_bytes()
    code, _, err = cli("contact-sheet", "--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", ir_dir / "a.png",
                       "--recipe", "noise", "--levels", "1", "--overwrite")
    assert code == 2 and "input" in err and str(ir_dir / "a.png") in err
    assert (ir_dir / "a.png").read_bytes() == before


@pytest.mark.parametrize("options, message", [
    (["--recipe", "foo"], "unknown recipe 'foo'"),
    (["--levels", "9"], "severity level must be 1..5, got 9"),
    (["--levels", ""], "--levels ''"),
    (["--recipe", ""], "--recipe ''"),
    (["--levels", "x"], "--levels must be comma-separated integers"),
])
def test_contact_sheet_checks_recipes_and_levels_first(cli, pairs, tmp_path, options, message):
    ir_dir, vi_dir = pairs
    out = tmp_path / "sheet.png"
    code, _, err = cli("contact-sheet", "--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", out,
                       *(["--recipe", "noise", "--levels", "1"] + options))
    assert code == 2 and message in err and not out.exists()


def test_contact_sheet_writes_only_png(cli, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    code, _, err = cli("contact-sheet", "--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", tmp_path / "s.txt",
                       "--recipe", "noise", "--levels", "1")
    assert code == 2 and ".png" in err and not (tmp_path / "s.txt").exists()
    code, _, err = cli("contact-sheet", "--ir", ir_dir / "a.png", "--vi", vi_dir / "a.png", "-o", tmp_path / "s.PNG",
                       "--recipe", "noise,noise", "--levels", "1")
    assert code == 0 and "--recipe 'noise,noise' repeats a value" in err
    assert Image.open(tmp_path / "s.PNG").format == "PNG"


# --- degrade ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [["--recipe", ""], ["--levels", ""], ["--levels", ","]])
def test_degrade_refuses_an_empty_recipe_or_level_list(cli, pairs, tmp_path, options):
    ir_dir, vi_dir = pairs
    code, _, err = cli("degrade", "--ir", ir_dir, "--vi", vi_dir, "--out", tmp_path / "o",
                       *(["--recipe", "noise", "--levels", "1"] + options))
    assert code == 2 and options[0] in err and not (tmp_path / "o").exists()


def test_degrade_uses_a_repeated_recipe_or_level_once(cli, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    out = tmp_path / "o"
    code, _, err = cli("degrade", "--ir", ir_dir, "--vi", vi_dir, "--out", out,
                       "--recipe", "noise,noise", "--levels", "1,2,1")
    assert code == 0 and "warning: --recipe 'noise,noise'" in err and "warning: --levels '1,2,1'" in err
    keys = [(r["recipe"], r["level"], r["name"]) for r in map(json.loads, (out / "manifest.jsonl").open())]
    assert len(keys) == len(set(keys)) == 2 * 2
    assert json.loads((out / "run.json").read_text())["levels"] == [1, 2]


def test_list_recipes_needs_no_out(cli):
    code, stdout, _ = cli("degrade", "--list-recipes")
    assert code == 0 and stdout.startswith("night")
    code, _, err = cli("degrade", "--recipe", "noise")
    assert code == 2 and "--out is required" in err


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_an_explicit_depth_model_must_be_a_folder(cli, pairs, tmp_path, kind):
    ir_dir, vi_dir = pairs
    model = tmp_path / "model"
    if kind == "file":
        model.write_bytes(b"not a model")
    code, _, err = cli("degrade", "--ir", ir_dir, "--vi", vi_dir, "--out", tmp_path / "o", "--recipe", "haze",
                       "--levels", "1", "--depth-model", model)
    assert code == 2 and f"--depth-model {model}" in err and not (tmp_path / "o").exists()


def test_generate_fails_before_any_output_when_an_explicit_depth_model_does_not_load(pairs, tmp_path):
    ir_dir, vi_dir = pairs
    cfg = BenchmarkConfig(ir_dir=str(ir_dir), vi_dir=str(vi_dir), recipes=["haze"], levels=[1],
                          depth_model=str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="gone"):
        generate(cfg, tmp_path / "o")
    assert not (tmp_path / "o").exists()


# --- degrade --replay ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00", b"hello\n", b'{"name": "a"}\n'])
def test_replay_of_something_else_than_a_manifest_is_an_error(cli, tmp_path, content):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(content)
    code, _, err = cli("degrade", "--replay", manifest, "--out", tmp_path / "o")
    assert code == 2 and f"{manifest}: not a" in err and not (tmp_path / "o").exists()


def test_replay_refuses_generation_options(cli, benchmark, tmp_path):
    code, _, err = cli("degrade", "--replay", benchmark, "--out", tmp_path / "o", "--recipe", "rain", "--seed", "3")
    assert code == 2 and "--recipe, --seed" in err and not (tmp_path / "o").exists()


def test_replay_refuses_a_changed_source_before_writing(cli, benchmark, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    _change_pixel(vi_dir / "b.png")
    code, _, err = cli("degrade", "--replay", benchmark, "--out", tmp_path / "o")
    assert code == 2 and str(vi_dir / "b.png") in err and str(ir_dir / "b.png") not in err
    assert not (tmp_path / "o").exists()


def test_replay_without_clean_copies_names_the_sources_and_writes_no_manifest(cli, benchmark, pairs, tmp_path):
    ir_dir, vi_dir = pairs
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("manifest.jsonl", "run.json"):
        (bare / name).write_bytes((benchmark.parent / name).read_bytes())
    _change_pixel(ir_dir / "a.png")
    code, _, err = cli("degrade", "--replay", bare / "manifest.jsonl", "--out", tmp_path / "o")
    assert code == 1 and "noise/1/a" in err and str(ir_dir / "a.png") in err
    assert not (tmp_path / "o" / "manifest.jsonl").exists() and not (tmp_path / "o" / "README.md").exists()


# --- demo ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--checkpoint", "/nonexistent/fusion"], "/nonexistent/fusion"),
])
def test_demo_checks_its_options_before_any_work(cli, tmp_path, options, message):
    code, _, err = cli("demo", "--out", tmp_path / "demo", *options)
    assert code == 2 and message in err and not (tmp_path / "demo").exists()


def test_demo_refuses_an_out_that_is_a_file(cli, tmp_path):
    out = tmp_path / "demo"
    out.write_text("keep me")
    code, _, err = cli("demo", "--out", out)
    assert code == 2 and "is a file" in err and out.read_text() == "keep me"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_a_corrupt_run_json_is_named_and_kept_without_overwrite(cli, pairs, tmp_path, content):
    ir_dir, vi_dir = pairs
    out = tmp_path / "bench"
    out.mkdir()
    (out / "run.json").write_text(content)
    args = ("degrade", "--ir", ir_dir, "--vi", vi_dir, "--out", out, "--recipe", "noise", "--levels", "1")
    code, _, err = cli(*args)
    assert code == 2 and "a benchmark's run.json" in err and "run.json: " in err and (out / "run.json").read_text() == content
    code, _, _ = cli(*args, "--overwrite")
    assert code == 0 and json.loads((out / "run.json").read_text())["recipes"] == ["noise"]


def test_degrade_checks_ir_bits(cli, pairs, tmp_path, capsys):
    ir_dir, vi_dir = pairs
    with pytest.raises(SystemExit) as exit_:
        cli("degrade", "--ir", ir_dir, "--vi", vi_dir, "--out", tmp_path / "o", "--ir-bits", "2000")
    assert exit_.value.code == 2 and "from 1 to 16" in capsys.readouterr().err and not (tmp_path / "o").exists()
