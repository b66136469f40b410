import math
import json

import pytest
import torch
from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb
from safetensors import safe_open

from allinone.baselines import max_fusion, mean_fusion
from allinone.conditioning import Condition
from allinone.models import FUSION_CNN_CONFIGS, FusionCNN, FusionCNNConfig
from allinone.models.fusion_cnn import (
    CHROMA_TO_RGB,
    RGB_TO_CHROMA,
    RGB_TO_LUMA,
    FiLM,
    apply_colour_matrix,
    apply_curve,
    modulated_depthwise_conv,
    smooth_select,
)
from degradations.labels import label_vector

from helpers import FakeTextEncoder


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _model(name="tiny", perturb=0.0, seed=0):
    """A model; ``perturb`` adds noise to every parameter, as training would move them off their init."""
    torch.manual_seed(seed)
    model = FusionCNN(name, text_encoder=FakeTextEncoder())
    if perturb:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * perturb)
    return model


def _labels(batch):
    return label_vector({"haze": 3, "lowlight": 2}).expand(batch, -1)


@pytest.mark.parametrize("name", sorted(FUSION_CNN_CONFIGS))
def test_output_shape_and_range_for_odd_sizes_and_batches(name):
    model = _model(name, perturb=0.02)
    ir, vi = _rand(2, 1, 37, 53), _rand(2, 3, 37, 53, seed=1)
    out = model(ir, vi)
    assert out.shape == (2, 3, 37, 53)
    assert out.min() >= 0 and out.max() <= 1
    assert model(ir, vi[:, :1]).shape == (2, 3, 37, 53)
    assert model(_rand(1, 1, 5, 7), _rand(1, 3, 5, 7)).shape == (1, 3, 5, 7)  # smaller than the padding


@pytest.mark.parametrize("name", sorted(FUSION_CNN_CONFIGS))
def test_parameter_count_under_one_million(name):
    assert FusionCNN(name).num_parameters() < 1_000_000


def test_gray_vis_gives_exactly_gray_output_while_colour_stays_colour():
    model = _model(perturb=0.05)  # non-trivial chroma offsets
    ir = _rand(3, 1, 24, 40)
    colour = _rand(1, 3, 24, 40, seed=1)
    gray = _rand(1, 1, 24, 40, seed=2).expand(-1, 3, -1, -1)
    out = model(ir, torch.cat([colour, gray, gray]))
    for sample in (1, 2):
        assert torch.equal(out[sample, 0], out[sample, 1]) and torch.equal(out[sample, 1], out[sample, 2])
    assert not torch.equal(out[0, 0], out[0, 2])
    one_channel = model(ir[:1], gray[:, :1])
    assert torch.equal(one_channel[:, 0], one_channel[:, 1]) and torch.equal(one_channel[:, 1], one_channel[:, 2])


def test_film_with_zero_embedding_is_identity():
    film = FiLM(embed_dim=8, channels=4)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
    x = _rand(2, 4, 9, 11)
    scale, shift = film(torch.zeros(2, 8))
    assert torch.equal(scale, torch.zeros(2, 4)) and torch.equal(shift, torch.zeros(2, 4))
    torch.testing.assert_close(modulated_depthwise_conv(x, conv, scale, shift), conv(x))


def test_modulated_conv_matches_film_after_the_conv():
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
    x, scale, shift = _rand(3, 4, 9, 11), torch.randn(3, 4), torch.randn(3, 4)
    expected = conv(x) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    torch.testing.assert_close(modulated_depthwise_conv(x, conv, scale, shift), expected)


def test_unconditioned_model_at_init_sees_identity_modulation():
    model = _model()
    ir, vi = _rand(2, 1, 32, 48), _rand(2, 3, 32, 48, seed=1)
    embed_dim = model.config.embed_dim
    assert torch.equal(model(ir, vi), model(ir, vi, torch.zeros(2, embed_dim)))
    # ... and the same output as a model whose FiLM and gate projections are all zero.
    stripped = _model()
    with torch.no_grad():
        for name, parameter in stripped.named_parameters():
            if ".film." in name or "gate.shift" in name:
                parameter.zero_()
    assert torch.equal(model(ir, vi), stripped(ir, vi, torch.randn(2, embed_dim)))


def test_labels_change_the_output_after_training_moves_the_weights():
    model = _model(perturb=0.02)
    ir, vi = _rand(2, 1, 32, 48), _rand(2, 3, 32, 48, seed=1)
    unconditioned = model(ir, vi)
    labelled = model(ir, vi, Condition(labels=_labels(2)))
    prompted = model(ir, vi, Condition(prompts=["remove the haze", "brighten the dark street"]))
    assert (labelled - unconditioned).abs().mean() > 1e-4
    assert (prompted - unconditioned).abs().mean() > 1e-4
    assert torch.equal(labelled, model(ir, vi, model.embed(Condition(labels=_labels(2)), batch_size=2)))


def test_output_starts_as_a_soft_max_select_on_smooth_images():
    """At init the selection term favours the brighter source: between mean and max fusion, nearer max."""
    model = _model()
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 80), indexing="ij")
    ir = (0.3 + 0.5 * cols)[None, None]
    vi = torch.stack([0.2 + 0.6 * rows, 0.2 + 0.5 * cols, 0.4 + 0.1 * rows * cols])[None]
    to_max = (model(ir, vi) - max_fusion(ir, vi)).abs().mean()
    to_mean = (model(ir, vi) - mean_fusion(ir, vi)).abs().mean()
    assert to_max < to_mean and to_max < 0.05


def test_full_resolution_chroma_keeps_the_pixel_level_colour_of_the_vis(tmp_path):
    """At init the output keeps the VIS where it is the brighter source; its chroma comes through whole
    at full resolution and averaged over 2x2 blocks otherwise."""
    model = _model().eval()
    model.save_pretrained(tmp_path)
    full = FusionCNN.from_pretrained(tmp_path, full_resolution_chroma=True)
    assert full.config.full_resolution_chroma and not model.config.full_resolution_chroma
    ir = torch.zeros(1, 1, 32, 48)  # a cold IR: the VIS is the brighter source everywhere
    vi = 0.4 + 0.4 * _rand(1, 3, 32, 48, seed=3)  # colour changing from pixel to pixel
    with torch.inference_mode():
        chroma_error_full = (rgb_to_ycbcr(full(ir, vi)) - rgb_to_ycbcr(vi))[:, 1:].abs().mean()
        chroma_error_half = (rgb_to_ycbcr(model(ir, vi)) - rgb_to_ycbcr(vi))[:, 1:].abs().mean()
    assert chroma_error_full < 0.2 * chroma_error_half  # 2x2 means lose the pixel-level chroma
    assert torch.equal(full.state_dict()["smooth_head.weight"], model.state_dict()["smooth_head.weight"])


def test_smooth_select_is_the_smooth_maximum_and_tends_to_max_select():
    a, b = _rand(2, 1, 16, 16).double(), _rand(2, 1, 16, 16, seed=1).double()
    zero = torch.zeros_like(a)
    for s in (5.0, 50.0, 500.0):
        sharpness = torch.full_like(a, s)
        out = smooth_select(a, b, zero, sharpness)
        torch.testing.assert_close(out, torch.logaddexp(s * a, s * b) / s)
        assert (out >= torch.maximum(a, b) - 1e-12).all()
        assert (out - torch.maximum(a, b)).max() <= math.log(2) / s + 1e-12


def test_smooth_select_is_soft_selection_plus_entropy_and_a_logit_sets_a_preference():
    a, b = _rand(2, 1, 16, 16).double(), _rand(2, 1, 16, 16, seed=1).double()
    logit = 3 * torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.double)
    sharpness = torch.full_like(a, 20.0)
    w = torch.sigmoid(logit + sharpness * (b - a))
    entropy = -(w * w.log() + (1 - w) * (1 - w).log())
    torch.testing.assert_close(smooth_select(a, b, logit, sharpness), torch.lerp(a, b, w) + entropy / sharpness)
    # a strong preference gives that source whatever the intensities
    torch.testing.assert_close(smooth_select(a, b, torch.full_like(a, -100.0), sharpness), a)
    torch.testing.assert_close(smooth_select(a, b, torch.full_like(a, 100.0), sharpness), b)


def test_smooth_select_gradcheck():
    inputs = [_rand(1, 1, 4, 4, seed=seed).double().requires_grad_(True) for seed in range(3)]
    sharpness = torch.full((1, 1, 4, 4), 8.0, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(smooth_select, (*inputs, sharpness))


def test_colour_matrices_match_kornia():
    rgb = _rand(2, 3, 8, 8)
    ycbcr = rgb_to_ycbcr(rgb)
    torch.testing.assert_close(apply_colour_matrix(torch.tensor(RGB_TO_LUMA)[None], rgb), ycbcr[:, :1])
    torch.testing.assert_close(apply_colour_matrix(torch.tensor(RGB_TO_CHROMA), rgb), ycbcr[:, 1:] - 0.5)
    back = ycbcr[:, :1] + apply_colour_matrix(torch.tensor(CHROMA_TO_RGB), ycbcr[:, 1:] - 0.5)
    torch.testing.assert_close(back.clamp(0, 1), ycbcr_to_rgb(ycbcr), rtol=0, atol=1e-6)


def test_curve_brightens_dark_pixels_and_stays_in_range():
    luma = torch.linspace(0, 1, 101).view(1, 1, 1, -1)
    ones = torch.ones_like(luma)
    assert torch.equal(apply_curve(luma, 0 * ones, 4), luma)
    brighter, darker = apply_curve(luma, ones, 4), apply_curve(luma, -ones, 4)
    assert brighter.min() >= 0 and brighter.max() <= 1 and darker.min() >= 0 and darker.max() <= 1
    assert (brighter[..., 1:-1] > luma[..., 1:-1]).all() and (darker[..., 1:-1] < luma[..., 1:-1]).all()
    assert (brighter.diff() >= 0).all()  # monotonic: no tone reversal


def test_save_and_from_pretrained_round_trip(tmp_path):
    model = _model("small", perturb=0.02).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "allinone-fusion-cnn" and config["format_version"] == 2
    with safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        assert "embedder.null" in weights.keys()  # the embedder is part of the checkpoint

    loaded = FusionCNN.from_pretrained(tmp_path, text_encoder=FakeTextEncoder())
    assert loaded.config == model.config and not loaded.training
    ir, vi = _rand(2, 1, 37, 53), _rand(2, 3, 37, 53, seed=1)
    for condition in (None, Condition(labels=_labels(2)), Condition(prompts=["remove the haze", None])):
        assert torch.equal(loaded(ir, vi, condition), model(ir, vi, condition))


def test_from_pretrained_rejects_other_models(tmp_path):
    _model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "something-else"}))
    with pytest.raises(ValueError):
        FusionCNN.from_pretrained(tmp_path)
    # weights of the first format (plain-blend selection) would load but give other images
    (tmp_path / "config.json").write_text(json.dumps({**config, "format_version": 1}))
    with pytest.raises(ValueError, match="format version 1"):
        FusionCNN.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[:100])  # a copy cut short
    with pytest.raises(ValueError, match="model.safetensors: cannot read the weights"):
        FusionCNN.from_pretrained(tmp_path)
    for text in ("{not json", "[1, 2]"):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ValueError, match="config.json: (cannot read a model config|a model config must be)"):
            FusionCNN.from_pretrained(tmp_path)


def test_saved_weights_get_the_usual_file_mode(tmp_path):
    from degradations.io import USUAL_FILE_MODE

    _model().save_pretrained(tmp_path)  # safetensors alone writes 0600
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == USUAL_FILE_MODE


def test_config_from_name_dict_and_dataclass_agree():
    config = FUSION_CNN_CONFIGS["tiny"]
    as_dict = json.loads(json.dumps(config.__dict__))  # lists, as read back from JSON
    assert FusionCNNConfig.from_dict(as_dict) == config
    assert FusionCNN(as_dict).config == FusionCNN("tiny").config == FusionCNN(config).config
    with pytest.raises(ValueError):
        FusionCNNConfig.from_dict({**as_dict, "unknown_field": 1})


def test_labels_do_not_load_the_text_encoder():
    model = FusionCNN("tiny")
    model(_rand(1, 1, 16, 16), _rand(1, 3, 16, 16), Condition(labels=_labels(1)))
    assert not model.embedder.text_encoder.is_loaded


def test_gradients_reach_every_parameter():
    model = _model()
    ir, vi = _rand(3, 1, 32, 48), _rand(3, 3, 32, 48, seed=1) * 0.8 + 0.1
    condition = Condition(
        labels=_labels(3), label_mask=torch.tensor([True, True, False]), prompts=["remove the haze", None, None]
    )
    target = _rand(3, 3, 32, 48, seed=2)
    (model(ir, vi, condition) - target).abs().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_saved_model_grows_a_dehazing_prior_and_starts_almost_unchanged(tmp_path):
    model = _model("tiny", perturb=0.02).eval()
    model.save_pretrained(tmp_path)
    grown = FusionCNN.from_pretrained(tmp_path, dehaze_prior=True)
    assert grown.config.dehaze_prior and grown.num_parameters() == model.num_parameters() + 24 + 1
    ir, vi = _rand(1, 1, 48, 64), _rand(1, 3, 48, 64, seed=1) * 0.3 + 0.6  # a pale, hazy-looking VIS
    start = (grown(ir, vi) - model(ir, vi)).abs().max()
    with torch.no_grad():
        grown.dehaze_head.bias.fill_(10.0)  # take the dehazed VIS everywhere
    full = (grown(ir, vi) - model(ir, vi)).abs().max()
    assert full > 0.05 and start < 0.15 * full  # starts with sigmoid(BLEND_INIT_LOGIT) = 8% of the prior
    grown.save_pretrained(tmp_path / "grown")
    reloaded = FusionCNN.from_pretrained(tmp_path / "grown")
    assert torch.equal(reloaded(ir, vi), grown(ir, vi))
    with pytest.raises(ValueError, match="do not fit"):
        FusionCNN.from_pretrained(tmp_path, embed_dim=16)  # a change that reshapes saved weights


def test_the_dehazing_prior_inverts_a_debanded_vis_and_deband_levels_round_trip(tmp_path):
    """A pale, hazy VIS ramp rounded to 8-bit levels: the prior divides by a low transmission and stretches its
    one-level steps into bands; with ``deband_levels`` they become a slope first, so the bands are gone."""
    ramp = ((180 + torch.arange(128) / 8).round() / 255.0).expand(1, 3, 32, 128).contiguous()
    ir = torch.zeros(1, 1, 32, 128)
    plain = _model()
    with torch.no_grad():  # no detail, unit gains: the output luma is the (dehazed) VIS luma
        for head in (plain.detail_head, plain.smooth_head):
            head.weight.zero_()
    plain.save_pretrained(tmp_path)
    models = [FusionCNN.from_pretrained(tmp_path, dehaze_prior=True, deband_levels=levels) for levels in (0.0, 1.5)]
    largest_jump = []
    for model in models:
        with torch.no_grad():
            model.dehaze_head.bias.fill_(10.0)  # take the dehazed VIS everywhere
            largest_jump.append((model(ir, ramp).diff(dim=-1)[..., 8:-8] * 255).abs().max())
    # One level becomes ten at the floor transmission 0.1; debanded, the ramp rises evenly (1.25 levels a pixel).
    assert largest_jump[0] > 9.0 and largest_jump[1] < 0.3 * largest_jump[0]
    models[1].save_pretrained(tmp_path / "debanded")
    assert FusionCNN.from_pretrained(tmp_path / "debanded").config.deband_levels == 1.5
    with pytest.raises(ValueError, match="deband_levels"):
        FusionCNNConfig(deband_levels=-1.0)


def test_a_denoising_prior_smooths_noise_and_keeps_strong_edges(tmp_path):
    """Grown with ``denoise_levels``, the model blends in a self-guided filtering of the VIS where its new head
    says so: taken fully, the noise on a flat VIS mostly goes and a strong edge stays."""
    plain = _model()
    with torch.no_grad():  # no detail, unit gains: the output luma is the (smoothed) VIS luma
        for head in (plain.detail_head, plain.smooth_head):
            head.weight.zero_()
    plain.save_pretrained(tmp_path)
    grown = FusionCNN.from_pretrained(tmp_path, denoise_levels=24.0)
    assert grown.num_parameters() == plain.num_parameters() + 24 + 1
    step = torch.where(torch.arange(64) < 32, 0.3, 0.7).expand(1, 3, 48, 64)
    noisy = (step + 0.03 * torch.randn(1, 1, 48, 64, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ir = torch.zeros(1, 1, 48, 64)
    with torch.no_grad():
        start = grown(ir, noisy)
        grown.denoise_head.bias.fill_(10.0)  # take the smoothed VIS everywhere
        full = grown(ir, noisy)
        unchanged = plain(ir, noisy)
    flat = (slice(None), slice(None), slice(8, -8), slice(4, 24))
    assert (start - unchanged).abs().max() < 0.02  # the new head starts near 8% of the smoothing
    assert full[flat].std() < 0.35 * noisy[flat].std()
    edge = full[..., 8:-8, 33].mean() - full[..., 8:-8, 30].mean()
    assert edge > 0.3  # the 0.4 step survives
    grown.save_pretrained(tmp_path / "grown")
    assert FusionCNN.from_pretrained(tmp_path / "grown").config.denoise_levels == 24.0
    with pytest.raises(ValueError, match="denoise_levels"):
        FusionCNNConfig(denoise_levels=-1.0)


def test_input_priors_computed_in_another_thread_give_the_same_output_and_gradients():
    """With ``prior_executor`` set, the denoising and dehazing images are computed in a worker thread while the
    U-Net runs: the output and the gradients must be exactly those of the in-line computation, in inference
    mode (the worker takes the caller's mode) and with autograd on."""
    from concurrent.futures import ThreadPoolExecutor

    config = FUSION_CNN_CONFIGS["tiny"]
    torch.manual_seed(0)
    model = FusionCNN(FusionCNNConfig(**{**config.__dict__, "dehaze_prior": True, "deband_levels": 1.5,
                                         "denoise_levels": 24.0}), text_encoder=FakeTextEncoder())
    assert model.has_input_priors and not _model().has_input_priors
    ir, vi = _rand(2, 1, 40, 56), _rand(2, 3, 40, 56, seed=1) * 0.4 + 0.5

    def run() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        with torch.inference_mode():
            inferred = model(ir, vi, Condition(labels=_labels(2)))
        out = model(ir, vi, Condition(labels=_labels(2)))
        out.square().mean().backward()
        return inferred, out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    in_line = run()
    with ThreadPoolExecutor(1) as executor:
        model.prior_executor = executor
        threaded = run()
    model.prior_executor = None
    assert torch.equal(threaded[0], in_line[0]) and torch.equal(threaded[1], in_line[1])
    assert threaded[2].keys() == in_line[2].keys()
    assert all(torch.equal(threaded[2][name], in_line[2][name]) for name in in_line[2])
    assert model.dehaze_head.weight.grad.abs().sum() > 0 and model.denoise_head.weight.grad.abs().sum() > 0
