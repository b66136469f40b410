import logging
import os

import numpy as np
import pytest
import torch

from degradations import depth as depth_module
from degradations.depth import (
    DEFAULT_DEPTH_MODEL_ENV,
    HF_REPO_ID,
    DepthCache,
    DepthEstimator,
    heuristic_depth,
)

NOT_FOUND = "Depth Anything V2 weights not found"


def _textured_bottom_bright_top(height: int = 48, width: int = 64) -> torch.Tensor:
    """A bright, smooth, unsaturated sky over a saturated, high-frequency ground."""
    generator = torch.Generator().manual_seed(0)
    image = torch.empty(1, 3, height, width)
    image[:, :, : height // 2] = 0.9
    ground = torch.rand(1, 1, height - height // 2, width, generator=generator)
    image[:, :, height // 2 :] = ground * torch.tensor([0.6, 0.4, 0.1]).view(1, 3, 1, 1)
    return image


@pytest.fixture
def no_default_weights(monkeypatch, tmp_path):
    """No env var, an empty Hugging Face cache and a fresh log-once registry."""
    import huggingface_hub.constants

    monkeypatch.delenv(DEFAULT_DEPTH_MODEL_ENV, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    monkeypatch.setattr(depth_module, "_logged_messages", set())


@pytest.fixture(scope="module")
def tiny_depth_anything(tmp_path_factory):
    """A random-initialised, tiny Depth Anything V2 checkpoint with its image processor."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=28,
        out_indices=[1, 2],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=32,
        reassemble_factors=[2, 1],
        neck_hidden_sizes=[8, 16],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(config)
    # Random init leaves the ReLU output almost constant; a positive head bias keeps it informative.
    torch.nn.init.constant_(model.head.conv3.bias, 1.0)
    folder = tmp_path_factory.mktemp("tiny_depth_anything")
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 42, "width": 42}, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(
        folder
    )
    return folder


# --- heuristic ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 37, 53), (1, 1, 5, 7), (3, 1, 121, 13), (1, 3, 1, 9), (1, 3, 480, 640)])
def test_heuristic_shape_and_range(shape):
    image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    depth = heuristic_depth(image)
    assert depth.shape == (shape[0], 1, *shape[2:])
    assert torch.isfinite(depth).all()
    assert depth.min() >= 0.0 and depth.max() <= 1.0


def test_heuristic_is_deterministic():
    image = torch.rand(2, 3, 45, 61, generator=torch.Generator().manual_seed(2))
    assert torch.equal(heuristic_depth(image), heuristic_depth(image.clone()))


def test_heuristic_uses_the_full_range():
    depth = heuristic_depth(_textured_bottom_bright_top())
    assert depth.amin() == 0.0 and depth.amax() == 1.0


@pytest.mark.parametrize("channels", [1, 3])
def test_heuristic_puts_smooth_bright_top_behind_textured_bottom(channels):
    image = _textured_bottom_bright_top()[:, :channels]
    depth = heuristic_depth(image)[0, 0]
    top, bottom = depth[:12].mean(), depth[-12:].mean()
    assert top > bottom + 0.5


def test_heuristic_follows_image_cues_not_only_position():
    # Left half: sky-like (bright, unsaturated, smooth); right half: textured, saturated ground.
    image = _textured_bottom_bright_top(64, 64).transpose(-1, -2)
    depth = heuristic_depth(image)[0, 0]
    assert depth[:, :24].mean() > depth[:, -24:].mean() + 0.2


def test_heuristic_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="C in"):
        heuristic_depth(torch.rand(1, 2, 8, 8))


# --- Depth Anything -------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_depth_anything_from_folder(tiny_depth_anything, channels):
    estimator = DepthEstimator.load(tiny_depth_anything, fallback=False)
    assert estimator.source.startswith("depth-anything")
    assert str(tiny_depth_anything) in estimator.source
    image = torch.rand(2, channels, 33, 47, generator=torch.Generator().manual_seed(3))
    depth = estimator(image)
    assert depth.shape == (2, 1, 33, 47)
    assert torch.isfinite(depth).all()
    assert depth.min() >= 0.0 and depth.max() <= 1.0
    assert not torch.equal(depth, heuristic_depth(image))


def test_depth_anything_depth_is_flipped_disparity(tiny_depth_anything, monkeypatch):
    estimator = DepthEstimator.load(tiny_depth_anything, fallback=False)
    model = estimator.model
    disparity = torch.linspace(0.0, 3.0, 42).view(1, 42, 1).expand(1, 42, 42)  # grows downwards: bottom nearest

    def fake_forward(pixel_values):
        return type("Output", (), {"predicted_depth": disparity.expand(pixel_values.shape[0], -1, -1)})()

    monkeypatch.setattr(model, "forward", fake_forward)
    depth = estimator(torch.rand(1, 3, 42, 42))[0, 0]
    assert depth[0].mean() > 0.95 and depth[-1].mean() < 0.05


def test_env_var_is_honoured(tiny_depth_anything, no_default_weights, monkeypatch):
    monkeypatch.setenv(DEFAULT_DEPTH_MODEL_ENV, str(tiny_depth_anything))
    assert DepthEstimator.load().source == f"depth-anything-v2:{tiny_depth_anything}"


def test_local_hf_cache_is_used(tiny_depth_anything, no_default_weights, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    repo = cache / ("models--" + HF_REPO_ID.replace("/", "--"))
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in tiny_depth_anything.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    estimator = DepthEstimator.load()
    assert estimator.source.startswith("depth-anything-v2:")
    assert str(snapshot) in estimator.source


def test_missing_path_without_fallback_names_it(tmp_path):
    missing = tmp_path / "no_such_weights"
    with pytest.raises(FileNotFoundError, match="no_such_weights"):
        DepthEstimator.load(missing, fallback=False)


def test_broken_folder_without_fallback_names_it(tmp_path):
    broken = tmp_path / "broken_weights"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(OSError, match="broken_weights"):
        DepthEstimator.load(broken, fallback=False)


def test_missing_path_with_fallback_warns_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(depth_module, "_logged_messages", set())
    missing = tmp_path / "no_such_weights"
    with caplog.at_level(logging.INFO, logger="degradations"):
        first = DepthEstimator.load(missing)
        second = DepthEstimator.load(missing)
    assert first.source == second.source == "heuristic-v1"
    warnings = [r for r in caplog.records if "no_such_weights" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_no_weights_anywhere_falls_back_with_one_message(no_default_weights, caplog):
    with caplog.at_level(logging.INFO, logger="degradations"):
        estimators = [DepthEstimator.load() for _ in range(3)]
    assert all(e.source == "heuristic-v1" for e in estimators)
    messages = [r.getMessage() for r in caplog.records if NOT_FOUND in r.getMessage()]
    assert messages == [f"{NOT_FOUND} (set ALLINONE_DEPTH_MODEL=/path); using the heuristic depth"]
    image = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(4))
    assert torch.equal(estimators[0](image), heuristic_depth(image))


def test_no_weights_anywhere_without_fallback_raises(no_default_weights):
    with pytest.raises(FileNotFoundError, match=DEFAULT_DEPTH_MODEL_ENV):
        DepthEstimator.load(fallback=False)


# --- cache ----------------------------------------------------------------------------------------------


class CountingEstimator(DepthEstimator):
    def __init__(self, source: str = "heuristic-v1"):
        super().__init__(source=source)
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        return super().__call__(rgb)


def test_cache_computes_once_and_returns_identical_maps(tmp_path):
    estimator = CountingEstimator()
    cache = DepthCache(tmp_path / "depth", estimator)
    image = torch.rand(1, 3, 31, 45, generator=torch.Generator().manual_seed(5))
    first = cache(image)
    second = cache(image.clone())
    assert estimator.calls == 1
    assert first.shape == (1, 1, 31, 45)
    assert torch.equal(first, second)
    assert torch.allclose(first, heuristic_depth(image), atol=1e-3)  # float16 storage
    # A fresh cache on the same folder (another process) reads the file back.
    assert torch.equal(DepthCache(tmp_path / "depth", CountingEstimator())(image), first)


def test_cache_keys_on_content_key_and_source(tmp_path):
    estimator = CountingEstimator()
    cache = DepthCache(tmp_path, estimator)
    generator = torch.Generator().manual_seed(6)
    image, other = torch.rand(1, 3, 16, 16, generator=generator), torch.rand(1, 3, 16, 16, generator=generator)
    cache(image)
    cache(other)
    assert estimator.calls == 2
    cache(other, key="file-sha")
    cache(image, key="file-sha")  # same explicit key: served from the cache
    assert estimator.calls == 3
    other_source = CountingEstimator(source="depth-anything-v2:/elsewhere")
    DepthCache(tmp_path, other_source)(image)
    assert other_source.calls == 1
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".npy"] * 4


def test_cache_writes_atomically(tmp_path, monkeypatch):
    cache = DepthCache(tmp_path, CountingEstimator())
    image = torch.rand(1, 1, 12, 14, generator=torch.Generator().manual_seed(7))
    cache(image)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"
    assert np.load(files[0]).dtype == np.float16

    def failing_save(file, array):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(depth_module.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        cache(torch.rand(1, 1, 12, 14, generator=torch.Generator().manual_seed(8)))
    assert list(tmp_path.iterdir()) == files  # no partial or temporary file left behind
    assert os.listdir(tmp_path) == [files[0].name]


def test_cache_takes_one_image(tmp_path):
    with pytest.raises(ValueError, match="one image"):
        DepthCache(tmp_path, DepthEstimator())(torch.rand(2, 3, 8, 8))
