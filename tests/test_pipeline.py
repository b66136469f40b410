"""FusionPipeline: inputs of every kind, conditioning, gray VIS, tiling, size checks; timestamp pairing of videos."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from allinone.models.fusion_cnn import FiLM, FusionCNN
from allinone.pipeline import (DEFAULT_CHECKPOINT, DEFAULT_TILE, FusionPipeline, image_to_tensor, make_condition,
                               resolve_tile)
from allinone.video import FrameAccounting, pair_by_timestamp
from degradations.io import to_uint8

from helpers import FakeTextEncoder

H, W = 40, 48


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random tiny FusionCNN whose FiLM layers are perturbed, so the condition visibly changes the output."""
    torch.manual_seed(0)
    model = FusionCNN("tiny")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FiLM):
                module.proj.weight.copy_(0.5 * torch.randn(module.proj.weight.shape, generator=generator))
    folder = tmp_path_factory.mktemp("fusion_cnn")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder():
    return FakeTextEncoder()


@pytest.fixture(scope="module")
def pipe(checkpoint, encoder):
    return FusionPipeline.from_pretrained(checkpoint, text_encoder=encoder)


@pytest.fixture(scope="module")
def pair_arrays():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.sin(xx / 4) * np.cos(yy / 5) * 60 + 120
    ir = np.clip(base[::-1] + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    vi = np.clip(np.stack([base + 25 * c for c in range(3)], -1) + rng.normal(0, 8, (H, W, 3)), 0, 255)
    return ir, vi.astype(np.uint8)


def test_default_checkpoint_sits_next_to_the_package():
    import allinone

    assert DEFAULT_CHECKPOINT == Path(allinone.__file__).resolve().parent.parent / "checkpoints" / "fusion_cnn"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no FusionCNN checkpoint"):
        FusionPipeline.from_pretrained(tmp_path)


def test_every_input_kind_gives_the_same_rgb_image_of_the_vis_size(pipe, pair_arrays, tmp_path):
    ir, vi = pair_arrays
    Image.fromarray(ir).save(tmp_path / "ir.png")
    Image.fromarray(vi).save(tmp_path / "vi.png")
    from_paths = pipe(tmp_path / "ir.png", str(tmp_path / "vi.png"))
    assert from_paths.mode == "RGB" and from_paths.size == (W, H)
    reference = np.asarray(from_paths)
    others = {
        "arrays": pipe(ir, vi),
        "float arrays": pipe(ir / 255.0, vi.astype(np.float32) / 255.0),
        "PIL": pipe(Image.fromarray(ir), Image.fromarray(vi)),
        "tensors": pipe(torch.from_numpy(ir) / 255.0, torch.from_numpy(vi).permute(2, 0, 1)),
        "IR as gray RGB": pipe(np.repeat(ir[..., None], 3, axis=-1), vi),
    }
    for kind, image in others.items():
        assert image.mode == "RGB" and image.size == (W, H), kind
        assert np.abs(np.asarray(image).astype(int) - reference).max() <= 1, kind


def test_image_to_tensor_channels_and_ranges():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255
    assert image_to_tensor(rgb, "ir").shape == (1, 1, 4, 5)
    assert image_to_tensor(rgb, "ir").max().item() == pytest.approx(0.299, abs=1e-6)  # luminance of pure red
    assert image_to_tensor(rgb, "vi").shape == (1, 3, 4, 5)
    assert image_to_tensor(np.full((4, 5, 3), 7, np.uint8), "vi").shape == (1, 1, 4, 5)  # gray stays one channel
    assert image_to_tensor(np.full((4, 5), 65535, np.uint16), "ir").max().item() == 1.0
    assert image_to_tensor(np.zeros((4, 5, 4), np.uint8), "vi").shape == (1, 1, 4, 5)  # alpha dropped
    with pytest.raises(ValueError, match="fuse_tensors"):
        image_to_tensor(torch.zeros(2, 3, 4, 5), "vi")
    with pytest.raises(TypeError):
        image_to_tensor([[0, 1]], "ir")


def test_degradation_and_prompt_reach_the_model(pipe, encoder, pair_arrays):
    ir, vi = pair_arrays
    ir_t, vi_t = image_to_tensor(ir, "ir"), image_to_tensor(vi, "vi")

    def fused(prompt=None, degradation=None):
        return pipe.fuse_tensors(ir_t, vi_t, make_condition(prompt, degradation))

    def differ(a, b):
        return (a - b).abs().max().item() > 1e-3

    plain, haze = fused(), fused(degradation={"haze": 3})
    assert torch.equal(haze, fused(degradation="haze:3"))
    assert differ(haze, plain) and differ(haze, fused(degradation="lowlight:5"))
    prompted = fused(prompt="dense fog at dusk")
    assert "dense fog at dusk" in encoder.encoded
    assert differ(prompted, plain) and differ(prompted, fused(prompt="heavy rain"))
    both = fused(prompt="dense fog at dusk", degradation="haze:3")
    assert differ(both, haze) and differ(both, prompted)
    # __call__ passes both on as well.
    assert np.array_equal(np.asarray(pipe(ir, vi, degradation="haze:3")), np.asarray(pipe(ir, vi, degradation={"haze": 3})))
    assert not np.array_equal(np.asarray(pipe(ir, vi, degradation="haze:3")), np.asarray(pipe(ir, vi, degradation="none")))
    with pytest.raises(ValueError, match="unknown degradation"):
        pipe(ir, vi, degradation="smog:2")


def test_told_nothing_the_pipeline_asks_the_blind_estimator_as_the_cli_does(checkpoint, encoder, pair_arrays,
                                                                            tmp_path):
    from test_degradation_estimator import estimator_seeing

    ir, vi = pair_arrays
    estimator_seeing({"haze": 4}).save_pretrained(tmp_path / "estimator")
    pipe = FusionPipeline.from_pretrained(checkpoint, text_encoder=encoder, estimator_path=tmp_path / "estimator")
    assert pipe.has_estimator
    blind = np.asarray(pipe(ir, vi))
    assert np.array_equal(blind, np.asarray(pipe(ir, vi, degradation="auto")))
    assert np.array_equal(blind, np.asarray(pipe(ir, vi, degradation="haze:4")))  # what the estimator sees
    unconditioned = np.asarray(pipe(ir, vi, degradation="none"))
    assert not np.array_equal(blind, unconditioned)
    ir_t, vi_t = image_to_tensor(ir, "ir"), image_to_tensor(vi, "vi")
    assert np.array_equal(unconditioned, to_uint8(pipe.fuse_tensors(ir_t, vi_t, None)))
    # The shipped model has input priors, and on 2 threads the estimator reads half its crops in the second thread.
    shipped = FusionPipeline.from_pretrained(DEFAULT_CHECKPOINT, text_encoder=encoder,
                                             estimator_path=tmp_path / "estimator")
    try:
        for threads in (1, 2):
            shipped.use_threads(threads)
            assert (shipped.model.prior_executor is not None) == (threads == 2)
            assert shipped.estimator.crop_executor is shipped.model.prior_executor
            for tile in (None, 24):  # whole frame, and tiles (the priors then come with each tile)
                fused, levels = shipped.fuse_blind(ir_t, vi_t, tile=tile, overlap=8)
                assert levels == {"haze": 4}
                expected = shipped.fuse_tensors(ir_t, vi_t, make_condition(degradation=levels), tile, overlap=8)
                assert torch.equal(fused, expected)
    finally:
        shipped.use_threads(1)
    prompted = np.asarray(pipe(ir, vi, prompt="dense fog"))  # told something: no estimate
    assert "dense fog" in encoder.encoded and not np.array_equal(prompted, blind)

    without = FusionPipeline.from_pretrained(checkpoint, text_encoder=encoder, estimator_path=tmp_path / "absent")
    assert not without.has_estimator
    with pytest.warns(UserWarning, match="fusing unconditioned"):
        assert np.array_equal(np.asarray(without(ir, vi)), unconditioned)


def test_make_condition():
    assert make_condition() is None
    cond = make_condition("rain", {"rain": 5})
    assert cond.prompts == ["rain"] and cond.labels.shape == (1, 10) and cond.labels.max().item() == 1.0
    assert make_condition(degradation="").labels.abs().sum().item() == 0  # known clean differs from unknown


def test_gray_vis_gives_a_gray_output(pipe, pair_arrays):
    ir, vi = pair_arrays
    for gray in (vi[..., 1], np.repeat(vi[..., 1:2], 3, axis=-1)):
        fused = np.asarray(pipe(ir, gray, degradation="noise:2"))
        assert np.array_equal(fused[..., 0], fused[..., 1]) and np.array_equal(fused[..., 1], fused[..., 2])
    colour = np.asarray(pipe(ir, vi))
    assert not np.array_equal(colour[..., 0], colour[..., 2])


def test_tiled_output_is_close_to_whole_frame(pipe):
    generator = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(112.0), indexing="ij")
    base = 0.5 + 0.3 * torch.sin(xx / 6) * torch.cos(yy / 7)
    ir = (base.flip(0) + 0.05 * torch.randn(96, 112, generator=generator)).clamp(0, 1)[None, None]
    vi = (base + torch.tensor([0.0, 0.1, -0.1])[:, None, None]).clamp(0, 1)[None]
    condition = make_condition(degradation="haze:2")
    whole = pipe.fuse_tensors(ir, vi, condition, tile=0)
    tiled = pipe.fuse_tensors(ir, vi, condition, tile=64, overlap=16)
    assert tiled.shape == whole.shape == (1, 3, 96, 112)
    assert (tiled - whole).abs().mean().item() < 0.003
    assert (tiled - whole).abs().max().item() < 0.03


def test_tile_choice():
    assert resolve_tile(1024, 1024, None) is None  # whole frame up to 1024x1024 pixels
    assert resolve_tile(1080, 1920, None) == DEFAULT_TILE
    assert resolve_tile(1080, 1920, 0) is None
    assert resolve_tile(64, 64, 32) == 32


def test_fuse_tensors_batches_with_one_condition(pipe, pair_arrays):
    ir, vi = pair_arrays
    ir_t, vi_t = image_to_tensor(ir, "ir"), image_to_tensor(vi, "vi")
    embedding = pipe.embed(make_condition(degradation="rain:4"))
    batch = pipe.fuse_tensors(torch.cat([ir_t, ir_t.flip(-1)]), torch.cat([vi_t, vi_t.flip(-1)]), embedding)
    single = pipe.fuse_tensors(ir_t, vi_t, make_condition(degradation="rain:4"))
    assert batch.shape == (2, 3, H, W)
    assert torch.allclose(batch[:1], single, atol=1e-5)


def test_size_mismatch_is_an_error_unless_resized(pipe, pair_arrays, tmp_path):
    ir, vi = pair_arrays
    Image.fromarray(ir[::2, ::2]).save(tmp_path / "small_ir.png")
    Image.fromarray(vi).save(tmp_path / "vi.png")
    with pytest.raises(ValueError) as info:
        pipe(tmp_path / "small_ir.png", tmp_path / "vi.png")
    assert "small_ir.png" in str(info.value) and "vi.png" in str(info.value) and "align" in str(info.value)
    assert pipe(tmp_path / "small_ir.png", tmp_path / "vi.png", align="resize").size == (W, H)


@pytest.mark.parametrize(
    "ir_count, ir_fps, vi_count, vi_fps, expected_ir, ended_by",
    [
        (10, 10, 15, 15, [0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7, 8, 9, 9], "vi"),  # IR slower: frames repeated
        (30, 30, 10, 10, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27], "vi"),  # IR faster: frames dropped
        (5, 10, 20, 15, [0, 1, 1, 2, 3, 3, 4, 4], "ir"),  # IR shorter (0.5 s): stop at 0.5 s
    ],
)
def test_pair_by_timestamp(ir_count, ir_fps, vi_count, vi_fps, expected_ir, ended_by):
    accounting = FrameAccounting()
    pairs = list(pair_by_timestamp(range(ir_count), range(vi_count), ir_fps, vi_fps, accounting))
    assert [ir for ir, _ in pairs] == expected_ir
    assert [vi for _, vi in pairs] == list(range(len(expected_ir)))
    assert accounting.frames_paired == len(expected_ir) and accounting.ended_by == ended_by
    assert accounting.ir_frames_repeated == len(expected_ir) - len(set(expected_ir))
    assert accounting.ir_frames_unused == accounting.ir_frames_read - len(set(expected_ir))
    assert accounting.vi_frames_unused == accounting.vi_frames_read - len(expected_ir)


def test_use_threads_gives_the_priors_a_thread_of_their_own_from_two_threads(pair_arrays):
    """2 threads on a CPU: the input priors run in a worker thread and each stream gets 1 torch thread; the
    output is the same as on 1 thread; back on 1 thread, the worker goes. A model without priors never gets one."""
    model = FusionCNN("tiny", text_encoder=FakeTextEncoder())
    plain = FusionPipeline(model)
    assert plain.use_threads(2) == 2 and model.prior_executor is None
    torch.manual_seed(0)
    pipe = FusionPipeline(FusionCNN.from_pretrained(DEFAULT_CHECKPOINT, text_encoder=FakeTextEncoder()))
    ir, vi = pair_arrays
    try:
        one = np.asarray(pipe(ir, vi, degradation="haze:3"))
        assert pipe.use_threads(2) == 1 and torch.get_num_threads() == 1
        assert pipe.model.prior_executor is not None
        assert np.array_equal(np.asarray(pipe(ir, vi, degradation="haze:3")), one)
        assert pipe.use_threads(4) == 2 and torch.get_num_threads() == 2
        assert pipe.use_threads(1) == 1 and pipe.model.prior_executor is None
        with pytest.raises(ValueError, match="threads"):
            pipe.use_threads(0)
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("make, error, match", [
    (lambda vi: vi.astype(np.float32), ValueError, r"vi: float values must lie in \[0, 1\], got \d+\.0\.\.\d+\.0"),
    (lambda vi: torch.from_numpy(vi).permute(2, 0, 1).float(), ValueError, r"vi: float values must lie in \[0, 1\]"),
    (lambda vi: vi / 127.5 - 1.0, ValueError, r"vi: float values must lie in \[0, 1\], got -"),
    (lambda vi: np.where(vi == vi.max(), np.nan, vi / 255.0), ValueError, "vi: .*NaN"),
    (lambda vi: torch.full((2, 3), float("inf")), ValueError, "vi: .*inf"),
    (lambda vi: vi.astype(np.int32), TypeError, "vi: unsupported pixel type int32"),  # 8- or 16-bit? unknown
    (lambda vi: torch.from_numpy(vi.astype(np.int64)).permute(2, 0, 1), TypeError, "vi: unsupported pixel type int64"),
    (lambda vi: torch.zeros(0, 0), ValueError, "vi: empty image"),
    (lambda vi: np.zeros((0, 5, 3), np.uint8), ValueError, "vi: empty image"),
    (lambda vi: torch.from_numpy(vi.copy()), ValueError, r"vi: .*channels-last .*permute\(2, 0, 1\)"),
    (lambda vi: np.zeros((4, 5, 5), np.uint8), ValueError, r"vi: expected an \(H, W\) or \(H, W, 3\) image"),
    (lambda vi: "no/such/vi.png", ValueError, "no/such/vi.png"),
])
def test_inputs_that_cannot_be_read_unambiguously_are_refused_naming_the_input(pair_arrays, make, error, match):
    with pytest.raises(error, match=match):
        image_to_tensor(make(pair_arrays[1]), "vi")


def test_arrays_tensors_and_pil_images_of_one_dtype_are_scaled_alike(pipe, pair_arrays):
    ir, vi = pair_arrays
    reference = image_to_tensor(vi, "vi")
    vi16 = vi.astype(np.uint16) * 257
    same = {
        "uint8 tensor": torch.from_numpy(vi).permute(2, 0, 1),
        "uint16 array": vi16,
        "uint16 tensor": torch.from_numpy(vi16).permute(2, 0, 1),
        "float tensor": torch.from_numpy(vi / 255.0).permute(2, 0, 1),
        "float array a rounding error above 1": vi / 255.0 + 5e-4,  # within FLOAT_TOLERANCE: clamped
    }
    for kind, image in same.items():
        assert torch.allclose(image_to_tensor(image, "vi"), reference, atol=1e-3), kind
    as_mode_i = Image.fromarray(vi16[..., 0].astype(np.int32))  # how PIL hands out a 16-bit PNG
    assert as_mode_i.mode == "I"
    assert torch.allclose(image_to_tensor(as_mode_i, "ir"), image_to_tensor(vi[..., 0], "ir"))
    with pytest.raises(ValueError, match="ir: float values"):  # the pipeline names the argument too
        pipe(ir.astype(np.float32), vi)


def test_prompt_and_degradation_of_the_wrong_kind_are_refused_before_any_work(pipe, pair_arrays):
    ir, vi = pair_arrays
    for prompt in ("", "   "):
        with pytest.raises(ValueError, match="prompt is empty"):
            pipe(ir, vi, prompt=prompt)
        with pytest.raises(ValueError, match="prompt is empty"):
            make_condition(prompt, "haze:3")
    with pytest.raises(TypeError, match="prompt must be a string"):
        pipe(ir, vi, prompt=123)
    for degradation in (3, ["haze:3"]):
        with pytest.raises(TypeError, match="degradation must be a string .* or None, got"):
            pipe(ir, vi, degradation=degradation)
    with pytest.raises(ValueError, match=r"level of 'haze' must be 0 \(absent\) to 5, got 9"):
        pipe(ir, vi, degradation={"haze": 9})
    with pytest.raises(ValueError, match=r'IR \(ndarray\) is 48x20 but VIS \(Tensor\) is 48x40; pass align="resize"'):
        pipe(ir[:20], torch.from_numpy(vi).permute(2, 0, 1))


def test_from_pretrained_names_the_weights_file_or_device_it_cannot_use(checkpoint, encoder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        (broken / name).write_bytes((checkpoint / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 10)  # truncated
    with pytest.raises(ValueError, match=f"{broken / 'model.safetensors'}: cannot read the weights"):
        FusionPipeline.from_pretrained(broken, text_encoder=encoder)
    with pytest.raises(ValueError, match="device 'bogus' is not a torch device"):
        FusionPipeline.from_pretrained(checkpoint, device="bogus", text_encoder=encoder)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': no CUDA device is available"):
            FusionPipeline.from_pretrained(checkpoint, device="cuda", text_encoder=encoder)
    assert FusionPipeline.from_pretrained(None, text_encoder=encoder).checkpoint == DEFAULT_CHECKPOINT
