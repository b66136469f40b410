"""scripts/eval_fusion.py, bench_fuse.py and make_figure.py: end to end on a random tiny model, and the
PASS/FAIL logic of the evaluation and of compare_checks.py; the argument checks the scripts share
(scripts/script_args.py) and the refusals they lead to."""
import argparse
import contextlib
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from allinone.metrics import METRIC_NAMES
from allinone.models.fusion_cnn import FusionCNN, FusionCNNConfig
from degradations.pairs import find_pairs

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

import ablate_outputs  # noqa: E402
import compare_checks  # noqa: E402
import eval_fusion  # noqa: E402
import mi_sensitivity  # noqa: E402
import script_args  # noqa: E402

BASELINES = ["mean", "max", "laplacian"]
DEGRADED_METHODS = ["ours_cond", "ours_uncond", "ours_auto", *BASELINES]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fusion_cnn")
    FusionCNN("tiny").save_pretrained(folder)
    return folder


def run_script(name: str, *args, expect: int = 0) -> subprocess.CompletedProcess:
    """Run scripts/``name`` with ``args``; assert its exit status is ``expect`` and, for a failure, that it
    ended with a message, not a traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == expect, result.stdout[-2000:] + result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    return result


def run_script_error(name: str, *args) -> str:
    """Run a script that must refuse its arguments (exit status 2, a usage error); its stderr."""
    return run_script(name, *args, expect=2).stderr


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def assert_finite(rows: list[dict], columns) -> None:
    for row in rows:
        for column in columns:
            assert math.isfinite(float(row[column])), (column, row)


def test_eval_fusion_quick_writes_every_table(checkpoint, data_root, tmp_path):
    from allinone.models.degradation_estimator import DegradationEstimator

    DegradationEstimator().save_pretrained(tmp_path / "estimator")
    out = tmp_path / "results"
    result = run_script("eval_fusion.py", "--checkpoint", checkpoint, "--data", data_root / "eval", "--out", out,
                        "--quick", "--threads", "1", "--estimator", tmp_path / "estimator")
    eval_root = data_root / "eval"
    pair_counts = {subset: min(2, len(find_pairs(eval_root / subset / "ir", eval_root / subset / "vi")))
                   for subset in eval_fusion.CLEAN_SUBSETS}
    clean_pairs = sum(pair_counts.values())

    columns, rows = read_csv(out / "clean_pairs.csv")
    assert columns == ["subset", "pair", "method", *METRIC_NAMES]
    assert len(rows) == 6 * clean_pairs  # ours told "clean", unconditioned, told what the estimator sees; baselines
    assert {row["method"] for row in rows} == {"ours", "ours_uncond", "ours_auto", *BASELINES}
    assert_finite(rows, METRIC_NAMES)

    columns, summary = read_csv(out / "clean_summary.csv")
    assert columns == ["group", "method", "pairs", *METRIC_NAMES]
    assert {row["group"] for row in summary} == {"all", "msrs_night", *pair_counts}
    overall = {row["method"]: row for row in summary if row["group"] == "all"}
    mean_vif = sum(float(row["VIF"]) for row in rows if row["method"] == "mean") / clean_pairs
    assert float(overall["mean"]["VIF"]) == pytest.approx(mean_vif)
    assert int(overall["ours"]["pairs"]) == clean_pairs

    columns, rows = read_csv(out / "synthetic_pairs.csv")
    assert columns == ["recipe", "level", "degradations", "subset", "pair", "method", "VIF", "Qabf", "SSIM", "MI"]
    assert len(rows) == len(eval_fusion.SYNTHETIC_RECIPES) * len(DEGRADED_METHODS) * clean_pairs
    assert_finite(rows, ["VIF", "Qabf", "SSIM", "MI"])
    columns, summary = read_csv(out / "synthetic_summary.csv")
    assert columns == ["recipe", "level", "method", "pairs", "VIF", "Qabf", "SSIM", "MI"]
    assert [row["recipe"] for row in summary[::len(DEGRADED_METHODS)]] == list(eval_fusion.SYNTHETIC_RECIPES)
    assert [row["method"] for row in summary[:len(DEGRADED_METHODS)]] == DEGRADED_METHODS
    assert {row["level"] for row in summary} == {"3"}

    real_metrics = ["VIF", "Qabf", "SSIM", "MI", "PSNR_ref", "SSIM_ref"]
    columns, rows = read_csv(out / "real_degraded_pairs.csv")
    assert columns == ["subset", "pair", "method", *real_metrics]
    assert {row["subset"] for row in rows} == set(eval_fusion.REAL_DEGRADED)
    assert {row["method"] for row in rows} == set(DEGRADED_METHODS)
    assert_finite(rows, real_metrics)
    columns, summary = read_csv(out / "real_degraded_summary.csv")
    assert columns == ["subset", "method", "pairs", *real_metrics]
    assert len(summary) == len(eval_fusion.REAL_DEGRADED) * len(DEGRADED_METHODS)

    columns, checks = read_csv(out / "checks.csv")
    assert columns == ["evaluation", "passed", "detail"]
    # 9 clean criteria + 2 MSRS night targets + one per synthetic recipe and metric.
    assert len(checks) == 11 + len(eval_fusion.SYNTHETIC_RECIPES) * 4
    assert {row["passed"] for row in checks} <= {"True", "False"}
    printed = [line for line in result.stdout.splitlines() if line.startswith(("PASS [", "FAIL ["))]
    assert len(printed) == len(checks)
    assert "QUICK" in result.stdout and "| ours |" in result.stdout


def test_eval_fusion_sections_runs_only_the_chosen_evaluations(checkpoint, data_root, tmp_path):
    out = tmp_path / "results"
    common = ["--checkpoint", checkpoint, "--data", data_root / "eval", "--out", out, "--quick", "--threads", "1",
              "--workers", "1", "--pairs-per-subset", "1"]
    result = run_script("eval_fusion.py", *common, "--sections", "clean")
    assert sorted(path.name for path in out.iterdir()) == ["checks.csv", "clean_pairs.csv", "clean_summary.csv",
                                                           "eval_settings.json"]
    _, checks = read_csv(out / "checks.csv")
    assert {row["evaluation"].split(" ")[0] for row in checks} == {"clean"}
    assert "## b." not in result.stdout and "## c." not in result.stdout
    assert json.loads((out / "eval_settings.json").read_text())["sections"] == ["clean"]

    # Another evaluation into the same folder: refused before any work, the folder left as it was ...
    (out / "notes.md").write_text("not eval_fusion's")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    error = run_script_error("eval_fusion.py", *common, "--sections", "synthetic", "--recipes", "night")
    assert "holds the results of another evaluation (sections: ['clean'] there, ['synthetic'] now" in error
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    # ... and with --overwrite the clean files of the old one go; other files stay.
    run_script("eval_fusion.py", *common, "--sections", "synthetic", "--recipes", "night", "--overwrite")
    assert sorted(path.name for path in out.iterdir()) == ["checks.csv", "eval_settings.json", "notes.md",
                                                           "synthetic_pairs.csv", "synthetic_summary.csv"]


def test_eval_fusion_recipes_runs_only_the_chosen_synthetic_recipes(checkpoint, data_root, tmp_path):
    out = tmp_path / "results"
    run_script("eval_fusion.py", "--checkpoint", checkpoint, "--data", data_root / "eval", "--out", out,
               "--quick", "--threads", "1", "--workers", "1", "--pairs-per-subset", "1",
               "--sections", "synthetic", "--recipes", "night", "noise")
    _, summary = read_csv(out / "synthetic_summary.csv")
    assert {row["recipe"] for row in summary} == {"night", "noise"}
    _, checks = read_csv(out / "checks.csv")
    assert sorted({row["evaluation"] for row in checks}) == ["synthetic night L3", "synthetic noise L3"]


def test_bench_fuse_reports_every_method(checkpoint, data_root, tmp_path):
    table = tmp_path / "bench.csv"
    result = run_script("bench_fuse.py", "--checkpoint", checkpoint, "--data", data_root / "eval", "--repeats", "2",
                        "--csv", table)
    columns, rows = read_csv(table)
    assert columns == ["method", "params", "gflops", "ms_1_thread", "ms_2_threads",
                       "ours_ratio_1_thread", "ours_ratio_2_threads"]
    # one stream: the same model without a thread for its input priors; blind: the shipped estimator first
    assert [row["method"] for row in rows] == ["ours", "ours, one stream", *BASELINES, "ours, blind"]
    assert_finite(rows, columns[1:])
    ours = rows[0]
    assert int(ours["params"]) == FusionCNN.from_pretrained(checkpoint).num_parameters()
    assert int(rows[-1]["params"]) > int(ours["params"])  # the estimator's parameters come on top
    assert float(ours["gflops"]) > 0 and float(ours["ours_ratio_1_thread"]) == 1.0
    assert rows[1]["params"] == ours["params"] and rows[1]["gflops"] == ours["gflops"]
    assert all(float(row["ms_1_thread"]) > 0 and float(row["ms_2_threads"]) > 0 for row in rows)
    assert "| ours |" in result.stdout and "peak resident memory" in result.stdout


def test_make_figure_writes_a_three_row_grid(checkpoint, data_root, tmp_path):
    output = tmp_path / "figure.png"
    run_script("make_figure.py", "--checkpoint", checkpoint, "--data", data_root / "eval", "-o", output,
               "--tile-width", "120")
    with Image.open(output) as figure:
        # 5 tiles of 120 px, 4 px apart, each under a 10 px label strip: the 417x218 RoadScene pair becomes
        # 120x63, the two 640x480 pairs (night, haze) 120x90.
        assert figure.size == (5 * 120 + 4 * 4, (10 + 63) + 2 * (10 + 90) + 2 * 4)
        assert figure.mode == "RGB"


def means(**values_by_method):
    """Per-method means for the check functions: means(ours=dict(VIF=...), ...)."""
    return {method: dict(values) for method, values in values_by_method.items()}


def test_clean_checks_apply_the_acceptance_criteria():
    good = dict(VIF=0.80, Qabf=0.65, SSIM=0.99)
    overall = means(ours=good, mean=dict(VIF=0.7, Qabf=0.5, SSIM=0.9), laplacian=dict(VIF=0.7, Qabf=0.6, SSIM=0.9),
                    max=dict(VIF=0.82, Qabf=0.66, SSIM=0.98))
    night = means(ours=dict(VIF=1.05, Qabf=0.63))
    checks = eval_fusion.clean_checks(overall, night)
    assert len(checks) == 11 and all(check.passed for check in checks)

    overall["max"]["VIF"] = 0.80 / 0.96  # ours is now below 0.97 x max
    night["ours"]["VIF"] = 0.9
    failed = [check.detail for check in eval_fusion.clean_checks(overall, night) if not check.passed]
    assert len(failed) == 2
    assert failed[0].startswith("VIF ours >= 0.97 x max") and "short by 0.1000" in failed[1]


def test_ordering_check_names_every_failing_comparison():
    passing = means(ours_cond=dict(VIF=0.9), ours_uncond=dict(VIF=0.8), mean=dict(VIF=0.5), max=dict(VIF=0.7),
                    laplacian=dict(VIF=0.6))
    check = eval_fusion.ordering_check("synthetic haze L3", passing, "VIF")
    assert check.passed and "best baseline max" in check.detail

    failing = means(ours_cond=dict(VIF=0.75), ours_uncond=dict(VIF=0.8), mean=dict(VIF=0.5), max=dict(VIF=0.78),
                    laplacian=dict(VIF=0.6))
    check = eval_fusion.ordering_check("synthetic haze L3", failing, "VIF")
    assert not check.passed
    assert check.detail.count("<=") == 2  # conditioned below unconditioned, conditioned below max
    assert "conditioned 0.7500 <= max 0.7800" in check.detail and check.line().startswith("FAIL [synthetic haze L3]")


def test_paired_difference_tells_a_consistent_lead_from_a_tie():
    def rows(differences):
        return [row for index, d in enumerate(differences)
                for row in ({"method": "ours_cond", "subset": "s", "pair": str(index), "VIF": 0.5 + d},
                            {"method": "ours_uncond", "subset": "s", "pair": str(index), "VIF": 0.5})]

    lead = eval_fusion.paired_difference(rows([0.01, 0.02, 0.03, 0.02]), "VIF", "ours_cond", "ours_uncond")
    assert lead.startswith("ours_cond - ours_uncond per pair +0.0200, 95% CI [+0.0")
    assert lead.endswith("ours_cond ahead on 4/4")
    # The same mean from pairs that disagree: the interval holds 0.
    tie = eval_fusion.paired_difference(rows([0.3, -0.2, 0.25, -0.27]), "VIF", "ours_cond", "ours_uncond")
    low, high = (float(x) for x in tie.split("CI [")[1].split("]")[0].split(", "))
    assert low < 0 < high and "ahead on 2/4" in tie
    assert eval_fusion.paired_difference(rows([0.1]) + [{"method": "ours_cond", "subset": "s", "pair": "x",
                                                          "VIF": 1.0}], "VIF", "ours_cond", "ours_uncond") \
        .endswith("ahead on 1/1")  # a pair only one method scored is left out
    failing = means(ours_cond=dict(VIF=0.75), ours_uncond=dict(VIF=0.8), mean=dict(VIF=0.5), max=dict(VIF=0.7),
                    laplacian=dict(VIF=0.6))
    check = eval_fusion.ordering_check("synthetic haze L3", failing, "VIF", rows([-0.05, -0.04, -0.06]))
    assert not check.passed and check.detail.endswith("ours_cond ahead on 0/3)")


def test_downscale_factor_brings_the_longer_side_under_the_limit():
    assert eval_fusion.downscale_factor(1024, 1280, 1024) == 2
    assert eval_fusion.downscale_factor(480, 640, 1024) == 1
    assert eval_fusion.downscale_factor(480, 640, None) == 1
    assert eval_fusion.box_downscale(torch.ones(1, 3, 9, 10), 2).shape == (1, 3, 4, 5)


def test_ssim_breakdown_bands_partition_the_fusion_ssim():
    import ssim_breakdown

    from allinone.metrics import ssim_fusion

    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (40, 48)).astype(np.uint8)
    vi = np.full((40, 48), 120, np.uint8)
    vi[:, 24:] = rng.integers(0, 256, (40, 24))  # left half flat, right half textured
    fused = ((ir.astype(np.uint16) + vi) // 2).astype(np.uint8)
    total = 0.0
    for source in (ir, vi):
        masks = ssim_breakdown.band_masks(source.astype(np.float64))
        assert sum(mask.sum() for mask in masks.values()) == masks["flat"].size  # every window in one band
        total += sum(ssim_breakdown.contributions(fused.astype(np.float64), source.astype(np.float64),
                                                  masks).values())
    assert total == pytest.approx(ssim_fusion(fused, ir, vi), abs=1e-9)
    # The flat half of the VIS image: a fused image equal to it there scores 1 per window, otherwise ~0.
    masks = ssim_breakdown.band_masks(vi.astype(np.float64))
    assert masks["flat"][:, :15].all() and masks["textured"][:, 27:].all()
    flat_share = masks["flat"].mean()
    same = ssim_breakdown.contributions(vi.astype(np.float64), vi.astype(np.float64), masks)["flat"]
    assert same == pytest.approx(flat_share)
    assert ssim_breakdown.contributions(fused.astype(np.float64), vi.astype(np.float64), masks)["flat"] < 0.1 * flat_share


def test_encode_prompts_lists_exactly_the_prompts_a_run_draws(tmp_path):
    import encode_prompts

    from allinone.training import TrainConfig, training_dataset
    from helpers import make_pair_folders

    make_pair_folders(tmp_path / "data" / "set", names=("a", "b"), size=(40, 32))
    cfg = TrainConfig(data=str(tmp_path / "data"), crop=16, batch_size=2, steps=5, save_every=2,
                      recipes=["noise", "mixed"], clean_fraction=0.3, seed=3)
    for processes in (1, 2):
        dataset = training_dataset(cfg, processes)
        drawn = set()
        for epoch in range(3):  # steps 1-2, 3-4, 5
            dataset.set_epoch(epoch)
            drawn |= {dataset[i]["prompt"] for i in range(len(dataset))}
        assert encode_prompts.run_prompts(cfg, processes) == drawn - {""}


def test_dehaze_prior_check_scores_every_way_of_restoring():
    import dehaze_prior_check

    generator = torch.Generator().manual_seed(0)
    scene = torch.rand(1, 3, 64, 64, generator=generator) * 0.6
    scene[:, 2] = 0.0  # the dark channel prior holds exactly
    scene[..., :20, :] = 0.9  # a sky of airlight colour above the scene
    transmission = torch.full((1, 1, 64, 64), 0.3)
    transmission[..., :20, :] = 0.0
    transmission[..., 50:, :] = 0.9  # the nearest rows stay clear, as under fog over a road
    hazy = scene * transmission + 0.9 * (1 - transmission)
    sample = eval_fusion.Sample("synthetic", "a", torch.rand(1, 1, 64, 64, generator=generator), hazy,
                                torch.rand(1, 1, 64, 64), scene)
    table = dehaze_prior_check.scores(FusionCNN("tiny").eval(), [sample], level=4)
    assert list(table) == ["hazy VIS", "dark channel prior on the VIS", "ours (unconditioned)", "ours (haze:4)",
                           "ours (haze:4) fed the dehazed VIS"]
    assert table["dark channel prior on the VIS"][0] > table["hazy VIS"][0] + 5  # PSNR_ref, dB
    transmission, near_field, ir_contrast = dehaze_prior_check.haze_density(sample)
    assert transmission == pytest.approx(0.3, abs=0.01)  # most of the scene below the sky
    assert near_field == pytest.approx(0.9, abs=0.01)  # the clear foreground


def test_switched_off_parts_match_a_model_built_without_them():
    torch.manual_seed(0)
    model = FusionCNN(FusionCNNConfig(denoise_levels=24.0, dehaze_prior=True)).eval()
    with torch.no_grad():  # heads start near zero: give every part a visible effect
        for head in (model.detail_head, model.smooth_head, model.denoise_head, model.dehaze_head):
            head.weight.normal_(std=0.5)
    ir, vi = torch.rand(1, 1, 32, 48), torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        full = model(ir, vi)
        plain = FusionCNN(FusionCNNConfig()).eval()  # neither blend: the same weights otherwise
        plain.load_state_dict(model.state_dict(), strict=False)
        assert ablate_outputs.model_parts(model) == list(ablate_outputs.PARTS)
        assert ablate_outputs.model_parts(plain) == ["detail", "curve", "gain", "select"]
        with ablate_outputs.switched_off(model, "denoise"), ablate_outputs.switched_off(model, "dehaze"):
            assert torch.allclose(model(ir, vi), plain(ir, vi), atol=1e-6)
        with ablate_outputs.switched_off(model, "detail"):
            without_detail = model(ir, vi)
        model.detail_head.weight.zero_()
        model.detail_head.bias.zero_()
        assert torch.allclose(without_detail, model(ir, vi), atol=1e-6)
        assert not torch.allclose(without_detail, full, atol=1e-3)
        with pytest.raises(ValueError, match="unknown part"):
            with ablate_outputs.switched_off(model, "chroma"):
                pass


def test_parts_taken_from_another_pass_replace_only_their_channels():
    torch.manual_seed(0)
    model = FusionCNN(FusionCNNConfig(denoise_levels=24.0, dehaze_prior=True)).eval()
    with torch.no_grad():
        for head in (model.detail_head, model.smooth_head, model.denoise_head, model.dehaze_head):
            head.weight.normal_(std=0.5)
        for parameter in model.embedder.parameters():  # so the condition changes every head's output
            parameter.normal_(std=0.5)
    ir, vi = torch.rand(1, 1, 32, 48), torch.rand(1, 3, 32, 48)
    condition = eval_fusion.labels_condition({"lowres": 3})
    parts = ablate_outputs.model_parts(model)
    with torch.no_grad():
        with ablate_outputs.captured_heads(model, parts) as unconditioned:
            model(ir, vi, None)
        with ablate_outputs.captured_heads(model, parts) as conditioned:
            conditioned_output = model(ir, vi, condition)
        with contextlib.ExitStack() as stack:  # every part from the conditioned pass itself: nothing changes
            for part in parts:
                stack.enter_context(ablate_outputs.taken_from(model, part, conditioned))
            assert torch.equal(model(ir, vi, condition), conditioned_output)
        with ablate_outputs.taken_from(model, "select", unconditioned):
            with ablate_outputs.captured_heads(model, ["select"]) as mixed:  # sees the replaced output
                assert not torch.allclose(model(ir, vi, condition), conditioned_output, atol=1e-4)
        smooth = mixed["select"]
        assert torch.equal(smooth[:, 2:4], unconditioned["select"][:, 2:4])
        assert torch.equal(smooth[:, :2], conditioned["select"][:, :2])
        assert torch.equal(smooth[:, 4:], conditioned["select"][:, 4:])


def test_ablate_outputs_prints_one_row_per_part(checkpoint, data_root):
    result = run_script("ablate_outputs.py", "--checkpoint", checkpoint, "--data", data_root / "eval",
                        "--pairs-per-subset", "1", "--threads", "1", "--recipe", "night", "--parts", "detail", "curve")
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ours")]
    assert rows == ["ours_cond", "ours_cond without detail", "ours_cond without curve", "ours_uncond"]
    result = run_script("ablate_outputs.py", "--checkpoint", checkpoint, "--data", data_root / "eval",
                        "--pairs-per-subset", "1", "--threads", "1", "--recipe", "lowres", "--parts", "select",
                        "--from-unconditioned")
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ours")]
    assert rows == ["ours_cond", "ours_cond with unconditioned select", "ours_uncond"]


def test_mi_sensitivity_noise_has_the_asked_spread_and_the_blur_keeps_a_flat_image():
    image = torch.full((1, 3, 64, 64), 0.5)
    noisy = mi_sensitivity.add_noise(image, 2.0, torch.Generator().manual_seed(0))
    assert (noisy - image).std().item() * 255 == pytest.approx(2.0, rel=0.05)
    assert torch.equal(mi_sensitivity.box_blur3(image), image)
    assert mi_sensitivity.luma_rmse(image, mi_sensitivity.luma8(image)) == 0.0
    gray = image[:, :1]  # on one channel the luma is the channel itself
    noisy_gray = mi_sensitivity.add_noise(gray, 2.0, torch.Generator().manual_seed(0))
    assert mi_sensitivity.luma_rmse(noisy_gray, mi_sensitivity.luma8(gray)) == pytest.approx(2.0, rel=0.1)


def test_mi_sensitivity_snaps_only_the_pixels_within_the_threshold():
    target = torch.full((1, 1, 2, 3), 100 / 255)
    image = target + torch.tensor([0.0, 1.0, 2.0, 3.0, -3.0, 9.0]).reshape(1, 1, 2, 3) / 255
    for threshold, replaced in [(0, 1), (2, 3), (3, 5)]:
        out = mi_sensitivity.snapped(image, target, threshold)
        assert int((out == target).sum()) == replaced
        assert torch.equal(out[out != target], image[out != target])  # the rest is left as it was


def test_mi_sensitivity_scores_mi_down_as_the_noise_grows(data_root):
    result = run_script("mi_sensitivity.py", "--data", data_root / "eval", "--pairs-per-subset", "1",
                        "--threads", "1", "--noise", "1", "4", "--recipes")
    rows = {cells[1].strip(): [float(c) for c in cells[2:-1]] for cells in
            (line.split("|") for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line)
            if cells[1].strip() != "method"}
    assert list(rows) == ["max-select", "+ noise, sigma 1 grey levels", "+ noise, sigma 4 grey levels",
                          "3x3 box blur", "x 1.02 gain"]
    mi = {name: values[0] for name, values in rows.items()}
    assert mi["max-select"] > mi["+ noise, sigma 1 grey levels"] > mi["+ noise, sigma 4 grey levels"]
    assert rows["max-select"][-1] == 0.0  # RMSE of the unchanged image


def write_run_checks(folder: Path, cond_haze_ssim: float, with_night: bool = True) -> Path:
    """An eval_fusion --out folder holding only checks.csv: a haze SSIM check that holds or fails with
    ``cond_haze_ssim``, a clean check that always holds, and optionally a night check."""
    folder.mkdir()
    haze = means(ours_cond=dict(SSIM=cond_haze_ssim), ours_uncond=dict(SSIM=0.85), mean=dict(SSIM=0.7),
                 max=dict(SSIM=0.6), laplacian=dict(SSIM=0.82))
    checks = [eval_fusion.Check("clean", True, "SSIM ours > max: 0.9978 vs 0.9947"),
              eval_fusion.ordering_check("synthetic haze L3", haze, "SSIM")]
    if with_night:
        checks.append(eval_fusion.Check("synthetic night L3", False, "MI: conditioned 3.8 <= max 4.2 (a note)"))
    eval_fusion.write_checks(folder / "checks.csv", checks)
    return folder


def test_compare_checks_lists_the_checks_that_fail_somewhere(tmp_path):
    first = compare_checks.read_checks(write_run_checks(tmp_path / "seed1", 0.90))
    second = compare_checks.read_checks(write_run_checks(tmp_path / "seed2", 0.84, with_night=False))
    assert list(first) == ["[clean] SSIM ours > max", "[synthetic haze L3] SSIM", "[synthetic night L3] MI"]

    table = compare_checks.compare_table({"seed 1": first, "seed 2": second}).splitlines()
    assert table[0] == "| check | seed 1 | seed 2 | holds in |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    assert "[clean] SSIM ours > max" not in rows  # it holds everywhere
    assert rows["[synthetic haze L3] SSIM"] == ("| [synthetic haze L3] SSIM | PASS | FAIL: conditioned 0.8400 <= "
                                                "unconditioned 0.8500 | 1/2 |")
    # A check one run did not make is "-" there and counted over the runs that made it; the note eval_fusion
    # appends in parentheses is left out of the cell.
    assert rows["[synthetic night L3] MI"] == "| [synthetic night L3] MI | FAIL: conditioned 3.8 <= max 4.2 | - | 0/1 |"
    assert rows["**passed**"] == "| **passed** | 2/3 | 1/2 | |"

    every = compare_checks.compare_table({"seed 1": first, "seed 2": second}, every_check=True)
    assert "| [clean] SSIM ours > max | PASS | PASS | 2/2 |" in every


def test_compare_checks_names_a_folder_without_checks(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"empty/checks.csv: not found"):
        compare_checks.main([str(tmp_path / "empty")])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checks.csv").write_text("evaluation,passed,detail\nclean,yes,VIF ours > mean: 1 vs 0\n")
    with pytest.raises(SystemExit, match=r"broken/checks.csv: 'passed' must be True or False, not 'yes'"):
        compare_checks.main([str(broken)])
    (broken / "checks.csv").write_text("evaluation,passed,detail\nclean,True,VIF ours > mean: 1 vs 0\n"
                                       "clean,False,VIF ours > mean: 0 vs 1\n")
    with pytest.raises(SystemExit, match=r"the check \[clean\] VIF ours > mean is listed twice"):
        compare_checks.main([str(broken)])
    with pytest.raises(SystemExit):
        compare_checks.main([str(broken), str(broken)])  # two columns of the same name
    assert "column names must differ" in capsys.readouterr().err


# --- argument checks (scripts/script_args.py) and what the scripts refuse ------------------------------


def test_whole_number_types_name_the_bound():
    assert script_args.positive_int("3") == 3 and script_args.non_negative_int("0") == 0
    level = script_args.whole_number(1, 5)
    assert level("5") == 5
    for parse, text, message in [(script_args.positive_int, "0", ">= 1, got '0'"),
                                 (script_args.positive_int, "2.5", ">= 1, got '2.5'"),
                                 (script_args.non_negative_int, "-1", ">= 0, got '-1'"),
                                 (level, "9", "from 1 to 5, got '9'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)


def test_path_types_say_what_is_wrong(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert script_args.existing_dir(str(tmp_path)) == tmp_path
    assert script_args.existing_file(str(afile)) == afile
    assert script_args.output_folder(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    for parse, text, message in [(script_args.existing_dir, tmp_path / "none", "none: no such folder"),
                                 (script_args.existing_dir, afile, "afile is a file, not a folder"),
                                 (script_args.existing_file, tmp_path / "none", "none: no such file"),
                                 (script_args.existing_file, tmp_path, "is a folder, not a file"),
                                 (script_args.output_folder, afile, "afile is a file; it needs a folder"),
                                 (script_args.output_folder, afile / "run", "afile is a file, so no folder")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(str(text))


def test_model_folder_names_the_missing_file_and_suggests_model(checkpoint, tmp_path):
    assert script_args.model_folder(str(checkpoint)) == checkpoint
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(argparse.ArgumentTypeError, match=r"no saved model \(model.safetensors missing\)$"):
        script_args.model_folder(str(tmp_path))
    run = tmp_path / "run"
    FusionCNN("tiny").save_pretrained(run / "model")
    with pytest.raises(argparse.ArgumentTypeError, match=r"config.json and model.safetensors missing\); "
                                                          r"did you mean .*run/model\?"):
        script_args.model_folder(str(run))


def test_pair_folder_needs_paired_ir_and_vi(tmp_path):
    from helpers import make_pair_folders

    make_pair_folders(tmp_path / "set", names=("a",), size=(16, 16))
    assert script_args.pair_folder(str(tmp_path / "set")) == tmp_path / "set"
    with pytest.raises(argparse.ArgumentTypeError, match=r"ir: not a folder"):
        script_args.pair_folder(str(tmp_path))


def test_load_model_turns_a_wrong_or_broken_model_into_a_usage_error(checkpoint, tmp_path, capsys):
    from allinone.models.degradation_estimator import DegradationEstimator

    parser = argparse.ArgumentParser(prog="script")
    assert isinstance(script_args.load_model(parser, FusionCNN, checkpoint), FusionCNN)
    with pytest.raises(SystemExit) as exit_info:
        script_args.load_model(parser, DegradationEstimator, checkpoint, "--estimator")
    assert exit_info.value.code == 2
    assert "error: --estimator: " in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((checkpoint / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\x01\x00")  # a truncated file: its error names no path
    with pytest.raises(SystemExit):
        script_args.load_model(parser, FusionCNN, broken)
    assert f"error: --checkpoint: {broken / 'model.safetensors'}: cannot read the weights" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["eval_fusion.py", "make_figure.py", "bench_fuse.py"])
def test_scripts_refuse_a_missing_checkpoint_with_a_message(script, tmp_path):
    error = run_script_error(script, "--checkpoint", tmp_path / "nonexistent")
    assert error.startswith("usage: ") and f"argument --checkpoint: {tmp_path / 'nonexistent'}: no such folder" in error


def test_eval_fusion_refuses_another_evaluation_in_out_unless_overwrite(checkpoint, tmp_path, capsys):
    out = tmp_path / "results"
    args = ["--checkpoint", str(checkpoint), "--data", str(tmp_path / "data"), "--out", str(out),
            "--estimator", str(tmp_path / "no_estimator"), "--sections", "clean"]
    assert eval_fusion.parse_args(args).out == out  # nothing there yet
    out.mkdir()
    (out / "clean_pairs.csv").write_text("from an older evaluation")
    with pytest.raises(SystemExit):
        eval_fusion.parse_args(args)
    assert "whose settings are not recorded in eval_settings.json" in capsys.readouterr().err
    parsed = eval_fusion.parse_args([*args, "--overwrite"])
    settings = eval_fusion.evaluation_settings(parsed)
    (out / "eval_settings.json").write_text(json.dumps(settings))
    eval_fusion.parse_args(args)  # the same evaluation again
    with pytest.raises(SystemExit):
        eval_fusion.parse_args([*args, "--niqe"])
    assert "(niqe: False there, True now)" in capsys.readouterr().err
    eval_fusion.clear_results(out)
    assert list(out.iterdir()) == []


def test_plot_training_curve_keeps_its_log_and_an_existing_png(tmp_path):
    log = tmp_path / "loss_log.csv"
    log.write_text("step,total\n1,0.5\n2,0.4\n")
    error = run_script_error("plot_training_curve.py", log, "-o", log)
    assert f"-o {log} is an input" in error and log.read_text().startswith("step,total")
    png = tmp_path / "curve.png"
    run_script("plot_training_curve.py", log, "-o", png)
    assert "exists; pass --overwrite" in run_script_error("plot_training_curve.py", log, "-o", png)
    run_script("plot_training_curve.py", log, "-o", png, "--overwrite")
    empty = tmp_path / "empty.csv"
    empty.write_text("step,total\n")
    assert "empty.csv holds no logged steps" in run_script_error("plot_training_curve.py", empty, "-o",
                                                                 tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_severity_table_has_a_parser():
    assert run_script("severity_table.py", "--help").stdout.startswith("usage: ")
    assert "unrecognized arguments: --bogus" in run_script_error("severity_table.py", "--bogus")


def test_encode_prompts_names_a_bad_config(tmp_path, capsys):
    import encode_prompts

    with pytest.raises(SystemExit) as exit_info:
        encode_prompts.main(["--config", str(tmp_path / "none.json"), "--cache", str(tmp_path / "cache")])
    assert exit_info.value.code == 2 and f"--config: {tmp_path / 'none.json'}: cannot read" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_train_estimator_writes_only_into_a_new_empty_or_estimator_run_folder(tmp_path):
    import train_estimator
    from allinone.models.degradation_estimator import DegradationEstimator

    assert train_estimator.out_problem(tmp_path / "new", overwrite=False) is None
    fusion_run = tmp_path / "fusion_run"  # what `allinone train` leaves
    FusionCNN("tiny").save_pretrained(fusion_run / "model")
    (fusion_run / "loss_log.csv").write_text("step\n")
    for overwrite in (False, True):
        assert "holds another kind of run (a 'allinone-fusion-cnn' model in model/)" in \
            train_estimator.out_problem(fusion_run, overwrite)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "loss_log.csv").write_text("step\n")
    assert "holds an unfinished estimator run" in train_estimator.out_problem(unfinished, overwrite=False)
    DegradationEstimator().save_pretrained(unfinished / "model")
    assert "already holds a trained estimator" in train_estimator.out_problem(unfinished, overwrite=False)
    assert train_estimator.out_problem(unfinished, overwrite=True) is None
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("x")
    assert "is not empty (notes.md); pass --overwrite" in train_estimator.out_problem(other, overwrite=False)
    assert train_estimator.out_problem(other, overwrite=True) is None


def test_bench_fuse_refuses_an_existing_csv_before_timing(checkpoint, tmp_path):
    existing = tmp_path / "speed.csv"
    existing.write_text("keep me")
    error = run_script_error("bench_fuse.py", "--checkpoint", checkpoint, "--csv", existing)
    assert f"--csv {existing} exists; pass --overwrite" in error and existing.read_text() == "keep me"


def test_eval_fusion_names_an_unpaired_file_without_a_traceback(checkpoint, tmp_path):
    from helpers import make_pair_folders

    subset = tmp_path / "data" / eval_fusion.CLEAN_SUBSETS[0]
    ir_dir, _ = make_pair_folders(subset, names=("a", "b"), size=(48, 48))
    (ir_dir / "lonely.png").write_bytes((ir_dir / "a.png").read_bytes())
    result = run_script("eval_fusion.py", "--checkpoint", checkpoint, "--data", tmp_path / "data",
                        "--out", tmp_path / "out", "--sections", "clean", "--threads", "1", "--workers", "1", expect=1)
    assert "lonely" in result.stderr and "Traceback" not in result.stderr
