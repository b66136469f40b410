"""The blind degradation estimator: shapes, crops, save/load, its training script, and degradation="auto"."""
import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from allinone.models.degradation_estimator import (DegradationEstimator, EstimatorConfig, crop_corners,
                                                   high_pass_magnitude)
from allinone.pipeline import FusionPipeline
from allinone.models.fusion_cnn import FusionCNN
from degradations.labels import DEGRADATION_TYPES, MAX_LEVEL, label_vector, levels_from_vector

from helpers import make_pair_folders

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def estimator_seeing(levels: dict[str, int]) -> DegradationEstimator:
    """An estimator whose output is ``levels`` whatever the input (zero last layer, bias favouring them)."""
    model = DegradationEstimator(EstimatorConfig(widths=(4, 8), hidden=8, crop=32))
    bias = torch.zeros(len(DEGRADATION_TYPES), MAX_LEVEL + 1)
    bias[torch.arange(len(DEGRADATION_TYPES)), (label_vector(levels) * MAX_LEVEL).round().long()] = 8.0
    torch.nn.init.zeros_(model.head[-1].weight)
    with torch.no_grad():
        model.head[-1].bias.copy_(bias.flatten())
    return model.eval()


def test_high_pass_magnitude_is_zero_on_flat_images_and_large_on_a_checkerboard():
    torch.testing.assert_close(high_pass_magnitude(torch.full((1, 2, 9, 9), 0.4)), torch.zeros(1, 2, 9, 9))
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()[None, None]
    inner = high_pass_magnitude(checker)[..., 1:-1, 1:-1]
    # A 3x3 window holds 5 of the centre's value and 4 of the other: |residual| = 4/9 everywhere inside.
    torch.testing.assert_close(inner, torch.full_like(inner, 4 / 9))

    corners = crop_corners(480, 640, 160)
    assert corners == [(0, 0), (0, 240), (0, 480), (320, 0), (320, 240), (320, 480)]
    assert crop_corners(100, 130, 160) == [(0, 0)]  # smaller than a crop: read whole
    assert crop_corners(200, 400, 160) == [(0, 0), (0, 240)]


def test_estimate_is_the_expected_level_over_its_crops():
    torch.manual_seed(0)
    model = DegradationEstimator(EstimatorConfig(widths=(4, 8), hidden=8, crop=32)).eval()
    ir, vi = torch.rand(2, 1, 64, 96), torch.rand(2, 3, 64, 96)
    logits = torch.stack([model(ir[..., t:t + 32, l:l + 32], vi[..., t:t + 32, l:l + 32])
                          for t, l in crop_corners(64, 96, 32)])
    assert logits.shape == (6, 2, len(DEGRADATION_TYPES), MAX_LEVEL + 1)
    estimate = model.estimate(ir, vi)
    assert estimate.shape == (2, len(DEGRADATION_TYPES))
    expected = (logits.softmax(dim=-1).mean(dim=0) * torch.arange(MAX_LEVEL + 1.0)).sum(dim=-1) / MAX_LEVEL
    haze = DEGRADATION_TYPES.index("haze")  # judged on the top row: the first three crops
    top_row = logits[:3, :, haze].softmax(dim=-1).mean(dim=0)
    expected[:, haze] = (top_row * torch.arange(MAX_LEVEL + 1.0)).sum(dim=-1) / MAX_LEVEL
    torch.testing.assert_close(estimate, expected)
    # Half the crops read in a second thread: the same probabilities, in inference mode as out of it.
    from concurrent.futures import ThreadPoolExecutor

    in_line = model.crop_probabilities(ir, vi)
    with ThreadPoolExecutor(1) as executor:
        model.crop_executor = executor
        threaded = model.crop_probabilities(ir, vi)
        with torch.inference_mode():
            inferred = model.crop_probabilities(ir, vi)
    assert torch.equal(threaded[0], in_line[0]) and torch.equal(threaded[1], in_line[1])
    assert torch.equal(inferred[0], in_line[0])


def test_haze_is_judged_on_the_top_row_of_crops_and_the_rest_on_all():
    """A stub network that sees every degradation at level 5 in bright crops and none in dark ones: a frame
    bright above and dark below is haze:5 (its far field) and level 2.5 of everything else."""
    model = DegradationEstimator(EstimatorConfig(widths=(4, 8), hidden=8, crop=32)).eval()

    def bright_means_level_5(ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        level = 5 if vi.mean() > 0.5 else 0
        return torch.nn.functional.one_hot(torch.full((vi.shape[0], len(DEGRADATION_TYPES)), level),
                                           MAX_LEVEL + 1).float() * 50.0

    model.forward = bright_means_level_5
    vi = torch.zeros(1, 3, 64, 96)
    vi[..., :32, :] = 1.0  # the top row of crops (corners at top 0) is bright
    estimate = model.estimate(torch.zeros(1, 1, 64, 96), vi)[0] * MAX_LEVEL
    for name, level in zip(DEGRADATION_TYPES, estimate.tolist()):
        assert level == pytest.approx(5.0 if name == "haze" else 2.5, abs=1e-3), name


def test_save_and_load_round_trip(tmp_path):
    model = estimator_seeing({"haze": 4})
    model.save_pretrained(tmp_path / "estimator")
    loaded = DegradationEstimator.from_pretrained(tmp_path / "estimator")
    ir, vi = torch.rand(1, 1, 40, 40), torch.rand(1, 3, 40, 40)
    torch.testing.assert_close(loaded.estimate(ir, vi), model.estimate(ir, vi))
    assert levels_from_vector(loaded.estimate(ir, vi)[0]) == loaded.estimate_levels(ir, vi) == {"haze": 4}
    with pytest.raises(ValueError, match="unknown EstimatorConfig fields"):
        EstimatorConfig.from_dict({"widths": [4, 8], "depth": 3})
    FusionCNN("tiny").save_pretrained(tmp_path / "fusion")
    with pytest.raises(ValueError, match="expected 'allinone-degradation-estimator'"):
        DegradationEstimator.from_pretrained(tmp_path / "fusion")


def test_auto_fuses_with_the_levels_the_estimator_sees():
    torch.manual_seed(0)
    pipe = FusionPipeline(FusionCNN("tiny"), estimator=estimator_seeing({"haze": 3, "noise": 2}))
    ir, vi = torch.rand(1, 1, 48, 64), torch.rand(1, 3, 48, 64)
    assert pipe.estimate_degradation(ir, vi) == {"haze": 3, "noise": 2}
    assert pipe.estimate_degradation(ir, vi[:, :1]) == {"haze": 3, "noise": 2}  # gray VIS
    auto = np.asarray(pipe(ir[0, 0], vi[0], degradation="auto"))
    told = np.asarray(pipe(ir[0, 0], vi[0], degradation="haze:3,noise:2"))
    assert np.array_equal(auto, told)


def test_auto_without_an_estimator_says_where_it_looked(tmp_path):
    pipe = FusionPipeline(FusionCNN("tiny"), estimator_path=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pipe(torch.rand(32, 32), torch.rand(3, 32, 32), degradation="auto")


def test_training_script_fits_the_labels_and_refuses_to_overwrite(tmp_path):
    import train_estimator

    make_pair_folders(tmp_path / "data" / "set", names=("a", "b"), size=(64, 48))
    args = ["--out", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--steps", "4", "--batch-size", "2",
            "--workers", "0", "--threads", "1", "--log-every", "2"]
    assert train_estimator.main(args) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "loss_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4] and all(math.isfinite(float(r["loss"])) for r in rows)
    assert DegradationEstimator.from_pretrained(tmp_path / "run" / "model").config.crop == 160
    assert train_estimator.main(args) == 2  # a finished run is not replaced without --overwrite
    assert train_estimator.main([*args, "--overwrite"]) == 0


def test_eval_script_pools_the_haze_crops_three_ways():
    import eval_estimator

    def crops(*levels: int) -> torch.Tensor:  # one crop per level, each certain of it
        return torch.nn.functional.one_hot(torch.tensor(levels), MAX_LEVEL + 1).float()

    top = torch.tensor([True, True, False, False])
    cases = [(5, crops(5, 5, 0, 0), top),  # fog over a clear foreground
             (0, crops(0, 0, 0, 2), top)]  # a clean pair with one hazy-looking lower crop
    rows = {row["haze judged on"]: row for row in eval_estimator.haze_pooling_rows(cases)}
    assert list(rows) == ["all crops", "top row", "most veiled crop"]
    # all crops: 2.5 rounds to level 2 (error 3), 0.5 to 0 (no false alarm); top row: 5 and 0; most veiled: 5 and 2.
    assert [rows[name]["level error where present"] for name in rows] == ["3.00", "0.00", "0.00"]
    assert [rows[name]["false alarms"] for name in rows] == ["0.00", "0.00", "1.00"]
    assert all(row["recall"] == "1.00" for row in rows.values())


def test_eval_script_runs_on_real_pairs(data_root, tmp_path, capsys):
    import eval_estimator

    torch.manual_seed(0)
    DegradationEstimator(EstimatorConfig(widths=(4, 8), hidden=8)).save_pretrained(tmp_path)
    assert eval_estimator.main(["--estimator", str(tmp_path), "--data", str(data_root / "eval"),
                                "--pairs-per-subset", "1", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for heading in ("| degradation | cases with it |", "| haze judged on |", "## Real degraded pairs"):
        assert heading in printed
