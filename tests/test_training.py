"""A few real training steps on tiny synthetic pairs: loss log, weights, resume, refusals."""
import csv
import json
from pathlib import Path

import pytest
import torch

from allinone.models.fusion_cnn import FusionCNN
from allinone.training import TrainConfig, lr_at, train

from helpers import make_pair_folders


def _cfg(root, steps):
    return TrainConfig(data=str(root), crop=32, batch_size=2, steps=steps, workers=0, save_every=2, log_every=1,
                       warmup_steps=1, use_prompts=False, recipes=["noise", "blur", "night"], seed=1)


@pytest.fixture()
def data(tmp_path):
    make_pair_folders(tmp_path / "data" / "set", names=("a", "b", "c"), size=(64, 48))
    return tmp_path / "data"


def test_train_writes_log_and_loadable_weights_then_resumes(data, tmp_path):
    out = tmp_path / "run"
    model = train(_cfg(data, 3), out, device="cpu")
    rows = list(csv.DictReader((out / "loss_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["total"]) > 0 for r in rows)
    loaded = FusionCNN.from_pretrained(out / "model")
    ir, vi = torch.rand(1, 1, 32, 32), torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(ir, vi), model(ir, vi))

    with pytest.raises(ValueError, match="--resume"):
        train(_cfg(data, 3), out, device="cpu")
    with pytest.raises(ValueError, match="another config"):
        train(_cfg(data, 5), out, resume=True, device="cpu")

    train(_cfg(data, 3), out, resume=True, device="cpu")  # already done: no new rows
    assert len(list(csv.DictReader((out / "loss_log.csv").open()))) == 3


def test_a_killed_run_resumes_from_its_last_state(data, tmp_path, monkeypatch):
    import allinone.training as training

    out, real_save = tmp_path / "run", training._save

    def save_then_die(accelerator, model, folder, step):
        real_save(accelerator, model, folder, step)
        raise KeyboardInterrupt  # killed right after the step-2 checkpoint

    monkeypatch.setattr(training, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, 4), out, device="cpu")
    monkeypatch.setattr(training, "_save", real_save)
    train(_cfg(data, 4), out, resume=True, device="cpu")
    assert [int(r["step"]) for r in csv.DictReader((out / "loss_log.csv").open())] == [1, 2, 3, 4]
    assert (out / "model" / "model.safetensors").exists() and not (out / ".state.tmp").exists()


def test_training_changes_the_weights_and_lowers_the_loss_on_one_batch(data, tmp_path):
    cfg = _cfg(data, 12)
    cfg.lr, cfg.recipes = 3e-3, ["noise"]
    train(cfg, tmp_path / "run", device="cpu")
    rows = list(csv.DictReader((tmp_path / "run" / "loss_log.csv").open()))
    first, last = float(rows[0]["total"]), min(float(r["total"]) for r in rows[-4:])
    assert last < first
    initial = FusionCNN(cfg.model)
    trained = FusionCNN.from_pretrained(tmp_path / "run" / "model")
    assert any(not torch.equal(a, b) for a, b in zip(initial.state_dict().values(), trained.state_dict().values()))


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(55, cfg) < lr_at(20, cfg)


def test_fine_tuning_starts_from_the_given_weights(data, tmp_path):
    base = FusionCNN("tiny")
    torch.nn.init.normal_(base.smooth_head.weight, std=0.5)
    base.save_pretrained(tmp_path / "base")
    cfg = _cfg(data, 1)
    cfg.init_from, cfg.lr = str(tmp_path / "base"), 1e-9  # a step too small to move the weights
    tuned = train(cfg, tmp_path / "run", device="cpu")
    torch.testing.assert_close(tuned.smooth_head.weight, base.smooth_head.weight, atol=1e-6, rtol=0)


def test_two_data_parallel_processes_train_like_one_with_their_joint_batch(data, tmp_path):
    """torchrun with 2 CPU processes (gloo), batch 2 each, must take the same steps as one process with
    batch 4: each rank gets its own half of the samples and the gradients are averaged across ranks."""
    import subprocess
    import sys

    cfg = _cfg(data, 2)
    cfg.condition_dropout = cfg.source_dropout = 0.0  # dropout draws differ per rank by design
    cfg.batch_size = 4
    single = train(cfg, tmp_path / "single", device="cpu")

    cfg.batch_size = 2
    config = tmp_path / "ddp.json"
    config.write_text(json.dumps(cfg.to_json()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "allinone.cli", "--threads", "1", "train", "--config", str(config),
               "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    parallel = FusionCNN.from_pretrained(tmp_path / "ddp" / "model")
    from accelerate.utils import set_seed
    set_seed(cfg.seed)  # as train() does before building the model: its initial weights
    initial = FusionCNN(cfg.model).state_dict()
    # Adam steps every weight by about the learning rate whatever its gradient's size, so a weight whose
    # gradient is at rounding level may step either way in the two runs (by how much depends on the CPU's
    # kernels); element-wise tolerances are fragile. Compared as a whole, the two runs must agree to well
    # within 1% of how far training moved the weights (ranks training on the same samples, or gradients
    # not averaged, give tens of percent).
    single, parallel = single.state_dict(), parallel.state_dict()
    assert single.keys() == parallel.keys()
    moved = torch.cat([(single[k] - initial[k]).flatten() for k in single]).norm()
    apart = torch.cat([(single[k] - parallel[k]).flatten() for k in single]).norm()
    assert moved > 0.1 and apart < 0.01 * moved, (float(apart), float(moved))
    assert [int(r["step"]) for r in csv.DictReader((tmp_path / "ddp" / "loss_log.csv").open())] == [1, 2]


def test_fine_tuning_can_grow_the_model(data, tmp_path):
    FusionCNN("tiny").save_pretrained(tmp_path / "base")
    cfg = _cfg(data, 1)
    cfg.init_changes = {"dehaze_prior": True}
    with pytest.raises(ValueError, match="init_from"):
        train(cfg, tmp_path / "orphan", device="cpu")
    cfg.init_from = str(tmp_path / "base")
    tuned = train(cfg, tmp_path / "run", device="cpu")
    assert tuned.config.dehaze_prior
    assert FusionCNN.from_pretrained(tmp_path / "run" / "model").config.dehaze_prior


def test_train_command_options_override_the_config(data, tmp_path):
    from allinone.cli import main

    base = FusionCNN("tiny")
    torch.nn.init.normal_(base.smooth_head.weight, std=0.5)
    base.save_pretrained(tmp_path / "base")
    cfg = _cfg(data, 3)
    cfg.init_from, cfg.lr = str(tmp_path / "elsewhere"), 1e-9  # the option must win over this missing folder
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.to_json()))
    assert main(["--threads", "1", "train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--init-from", str(tmp_path / "base"), "--steps", "1"]) == 0
    run_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run_config["init_from"] == str(tmp_path / "base") and run_config["steps"] == 1
    tuned = FusionCNN.from_pretrained(tmp_path / "run" / "model")
    torch.testing.assert_close(tuned.smooth_head.weight, base.smooth_head.weight, atol=1e-6, rtol=0)


def test_a_missing_init_model_fails_before_the_run_folder_is_written(data, tmp_path, capsys):
    from allinone.cli import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps(_cfg(data, 1).to_json()))
    command = ["--threads", "1", "train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu",
               "--init-from", str(tmp_path / "nowhere")]
    assert main(command) != 0
    assert "nowhere holds no saved model (config.json not found)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # so the corrected command is not refused as a second run

    FusionCNN("tiny").save_pretrained(tmp_path / "nowhere")
    assert main(command) == 0


def test_config_rejects_an_unknown_illumination_source():
    with pytest.raises(ValueError, match="illumination_from"):
        TrainConfig(illumination_from="reference")


def test_config_rejects_an_unknown_gradient_target():
    with pytest.raises(ValueError, match="gradient_target"):
        TrainConfig(gradient_target="mean")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json")),
                         ids=lambda path: path.name)
def test_every_shipped_recipe_is_a_valid_training_config(path):
    cfg = TrainConfig.from_file(path)
    assert cfg.steps > 0 and cfg.recipes


def test_config_rejects_a_non_positive_ssim_data_range():
    with pytest.raises(ValueError, match="ssim_data_range"):
        TrainConfig(ssim_data_range=0.0)


def test_gradient_target_reaches_the_loss(data, tmp_path):
    def first_gradient(target):
        cfg = _cfg(data, 1)
        cfg.gradient_target = target
        train(cfg, tmp_path / target, device="cpu")
        return float(next(csv.DictReader((tmp_path / target / "loss_log.csv").open()))["gradient"])

    # Same seed, data and weights: only the texture target differs (the max image has fewer edges).
    assert first_gradient("max_image") != pytest.approx(first_gradient("strongest_source"), rel=1e-3)


def test_illumination_from_darker_reweights_the_intensity_term_of_a_night_sample(data, tmp_path):
    def first_intensity(source):
        cfg = _cfg(data, 1)
        cfg.recipes, cfg.clean_fraction, cfg.illumination_from = ["night"], 0.0, source
        train(cfg, tmp_path / source, device="cpu")
        return float(next(csv.DictReader((tmp_path / source / "loss_log.csv").open()))["intensity"])

    # Same seed, same data, same initial weights: only the weighting of the intensity term differs.
    assert first_intensity("darker") != pytest.approx(first_intensity("clean"), rel=1e-3)


def test_a_run_from_before_a_new_config_field_still_resumes(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, 2), out, device="cpu")
    config_file = out / "config.json"
    saved = json.loads(config_file.read_text())
    del saved["illumination_from"]  # as written before the field existed; its default is what ran
    config_file.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="another config"):
        train(_cfg(data, 3), out, resume=True, device="cpu")
    train(_cfg(data, 2), out, resume=True, device="cpu")  # same config: resumes (already done)
    assert [int(r["step"]) for r in csv.DictReader((out / "loss_log.csv").open())] == [1, 2]
