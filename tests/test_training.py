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


def _interrupt_at_step(monkeypatch, step):
    """Make training stop with a KeyboardInterrupt (Ctrl-C) as it starts step ``step`` (1-based)."""
    import allinone.training as training

    calls, real_drop = [], training.drop_condition

    def drop_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real_drop(*args, **kwargs)

    monkeypatch.setattr(training, "drop_condition", drop_then_interrupt)


def _logged_steps(out):
    return [int(r["step"]) for r in csv.DictReader((out / "loss_log.csv").open())]


def test_a_run_interrupted_at_a_save_and_resumed_ends_with_the_uninterrupted_weights(data, tmp_path, monkeypatch):
    import allinone.training as training

    whole = train(_cfg(data, 4), tmp_path / "whole", device="cpu").state_dict()
    out, real_save = tmp_path / "run", training._save

    def save_then_die(accelerator, model, folder, step):
        real_save(accelerator, model, folder, step)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, 4), out, device="cpu")
    monkeypatch.setattr(training, "_save", real_save)
    resumed = train(_cfg(data, 4), out, resume=True, device="cpu").state_dict()  # with condition dropout
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    assert _logged_steps(out) == [1, 2, 3, 4]


def test_a_resumed_run_logs_each_step_once_under_one_header(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupt_at_step(monkeypatch, 2)  # step 1 logged, nothing saved yet
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, 4), out, device="cpu")
    _interrupt_at_step(monkeypatch, 4)  # saved at step 2, step 3 logged
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, 4), out, resume=True, device="cpu")
    assert _logged_steps(out) == [1, 2, 3]
    monkeypatch.undo()
    train(_cfg(data, 4), out, resume=True, device="cpu")
    lines = (out / "loss_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["step", "1", "2", "3", "4"]


def test_overwrite_leaves_the_old_run_until_the_new_one_starts_then_removes_all_of_it(data, tmp_path, monkeypatch):
    from allinone.training import saved_step

    out = tmp_path / "run"
    train(_cfg(data, 4), out, device="cpu")
    before = {name: (out / name).read_bytes() for name in ("config.json", "loss_log.csv")}
    broken = _cfg(data, 4)
    broken.data = str(tmp_path / "nowhere")
    with pytest.raises(ValueError):
        train(broken, out, overwrite=True, device="cpu")
    assert {name: (out / name).read_bytes() for name in before} == before and saved_step(out) == 4

    restart = _cfg(data, 4)
    restart.seed = 2
    _interrupt_at_step(monkeypatch, 2)  # before the new run's first save
    with pytest.raises(KeyboardInterrupt):
        train(restart, out, overwrite=True, device="cpu")
    assert not (out / "state").exists() and not (out / "model").exists()
    assert json.loads((out / "config.json").read_text())["seed"] == 2
    monkeypatch.undo()
    train(restart, out, resume=True, device="cpu")  # the new run, from its start: not the old one
    assert _logged_steps(out) == [1, 2, 3, 4] and saved_step(out) == 4


def test_resume_refuses_another_config_naming_the_keys_or_a_state_past_the_steps(data, tmp_path):
    out = tmp_path / "run"
    train(_cfg(data, 4), out, device="cpu")
    with pytest.raises(ValueError, match=r"another config \(steps: 4 -> 5\)"):
        train(_cfg(data, 5), out, resume=True, device="cpu")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "steps": 2}))  # as if state/ were another run's
    with pytest.raises(ValueError, match="saved at step 4, past the run's 2 steps"):
        train(_cfg(data, 2), out, resume=True, device="cpu")


def test_resume_needs_a_run_and_excludes_overwrite(data, tmp_path):
    with pytest.raises(ValueError, match="nothing to resume in .*; leave out --resume"):
        train(_cfg(data, 1), tmp_path / "typo", resume=True, device="cpu")
    with pytest.raises(ValueError, match="pass only one"):
        train(_cfg(data, 1), tmp_path / "run", resume=True, overwrite=True, device="cpu")
    assert not (tmp_path / "typo").exists() and not (tmp_path / "run").exists()


def test_out_must_not_be_or_overlap_the_init_model_or_the_data(data, tmp_path):
    base = tmp_path / "base"
    FusionCNN("tiny").save_pretrained(base)
    files = {path: path.read_bytes() for path in base.iterdir()}
    cfg = _cfg(data, 1)
    cfg.init_from = str(base)
    for out, relation in ((base, "is"), (base / "run", "is inside"), (tmp_path, "holds")):
        with pytest.raises(ValueError, match=f"--out {out} {relation} the init_from model"):
            train(cfg, out, overwrite=True, device="cpu")
    with pytest.raises(ValueError, match="is inside the data folder"):
        train(_cfg(data, 1), data / "set" / "ir", device="cpu")
    with pytest.raises(ValueError, match=f"--out {base} holds a saved allinone-fusion-cnn model, not a training run"):
        train(_cfg(data, 1), base, overwrite=True, device="cpu")
    assert {path: path.read_bytes() for path in base.iterdir()} == files
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile is a file, not a run folder"):
        train(_cfg(data, 1), tmp_path / "afile", device="cpu")


def test_init_from_names_a_truncated_weights_file_and_the_model_of_a_run_folder(data, tmp_path):
    FusionCNN("tiny").save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "model.safetensors").write_bytes(b"\0" * 10)
    cfg = _cfg(data, 1)
    cfg.init_from = str(tmp_path / "base")
    with pytest.raises(ValueError, match=f"{tmp_path / 'base' / 'model.safetensors'}: cannot read the weights"):
        train(cfg, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()
    train(_cfg(data, 1), tmp_path / "first", device="cpu")
    cfg.init_from = str(tmp_path / "first")
    with pytest.raises(ValueError, match=f"training run, not a model folder; its model is {tmp_path / 'first' / 'model'}"):
        train(cfg, tmp_path / "run", device="cpu")


def test_trained_weights_get_the_permissions_of_other_outputs(data, tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    out = tmp_path / "run"
    train(_cfg(data, 1), out, device="cpu")
    for file in (out / "model" / "model.safetensors", out / "state" / "model.safetensors", out / "config.json"):
        assert file.stat().st_mode & 0o777 == 0o666 & ~umask, file


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("steps", "ten", "steps must be a whole number >= 1, got 'ten'"),
    ("steps", None, "steps must be a whole number >= 1"),
    ("steps", 2.5, "steps must be a whole number >= 1"),
    ("steps", 0, "steps must be a whole number >= 1"),
    ("crop", 8, "crop must be a whole number >= 16"),
    ("save_every", 0, "save_every must be a whole number >= 1"),
    ("log_every", 0, "log_every must be a whole number >= 1"),
    ("batch_size", 0, "batch_size must be a whole number >= 1"),
    ("workers", -1, "workers must be a whole number >= 0"),
    ("levels", [], "levels must be a non-empty list of whole numbers 1..5"),
    ("levels", [9], "levels must be a non-empty list"),
    ("recipes", [], "recipes must be a non-empty list of names from night, "),
    ("recipes", "haze", "recipes must be a non-empty list"),
    ("recipes", ["bogus"], "recipes must be a non-empty list"),
    ("lr", "fast", "lr must be a number > 0, got 'fast'"),
    ("model", "huge", "model must be one of tiny, small or an object of FusionCNNConfig fields, got 'huge'"),
    ("data", 5, "data must be a folder path, got 5"),
    ("use_prompts", "no", "use_prompts must be true or false, got 'no'"),
    ("clean_fraction", 2.0, r"clean_fraction must be a number in \[0, 1\]"),
    ("loss", {"gradient": "big"}, "loss: weight 'gradient' must be a number >= 0, got 'big'"),
    ("loss", {"by_degradation": {"haze": {"color": None}}}, "loss: multiplier haze.color must be a number >= 0"),
    ("init_changes", {"bogus": True}, "init_changes must be an object of FusionCNNConfig fields"),
])
def test_a_bad_config_value_is_refused_when_read_naming_the_file_and_the_key(tmp_path, key, value, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({key: value}))
    with pytest.raises(ValueError, match=f"^{path}: {expected}"):
        TrainConfig.from_file(path)


@pytest.mark.parametrize("document", [[1, 2], "steps"])
def test_a_config_that_is_not_a_json_object_is_refused(tmp_path, document):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=f"{path}: the training config must be a JSON object"):
        TrainConfig.from_file(path)


def test_train_command_refuses_bad_settings_without_writing_anything(data, tmp_path, capsys):
    from allinone.cli import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps({**_cfg(data, 1).to_json(), "crop": 0}))
    command = ["--threads", "1", "train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(command) == 2
    assert f"error: {config}: crop must be a whole number >= 16, got 0" in capsys.readouterr().err
    config.write_text(json.dumps(_cfg(data, 1).to_json()))
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--steps", "0"])
    assert exit_info.value.code == 2 and "--steps: must be a whole number >= 1" in capsys.readouterr().err
    assert main([*command, "--resume"]) == 2
    assert "nothing to resume in" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # so the corrected command is not refused as a second run


def test_train_command_says_when_a_resumed_run_was_already_complete(data, tmp_path, capsys):
    from allinone.cli import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps(_cfg(data, 1).to_json()))
    command = ["--threads", "1", "train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(command) == 0
    assert "for 1 steps" in capsys.readouterr().out
    assert main([*command, "--resume"]) == 0
    assert "was already complete (1 steps): nothing to train" in capsys.readouterr().out


def test_plot_training_curve_reads_a_log_with_a_repeated_header_and_steps(tmp_path):
    """As a resume appended to a log before it was cut back to the saved step."""
    import subprocess
    import sys

    header = "step,seconds,lr,total,gradient"
    rows = [f"{step},0.1,0.002,{1 / step},0.5" for step in (1, 2, 3)]
    log = tmp_path / "loss_log.csv"
    log.write_text("\n".join([header, *rows, header, *rows[1:], "4,0.1,0.001,0.2,0.4"]) + "\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "plot_training_curve.py"
    done = subprocess.run([sys.executable, str(script), str(log), "-o", str(tmp_path / "curve.png")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
