"""Fusion metrics (allinone.metrics), the basicsr import shim and the ``allinone metrics`` command."""
from __future__ import annotations

import argparse
import csv
import importlib.util
import math

import numpy as np
import pytest
from PIL import Image

from allinone import metrics as M
from allinone.commands import metrics as metrics_command

HAS_BASICSR = importlib.util.find_spec("basicsr") is not None
needs_basicsr = pytest.mark.skipif(not HAS_BASICSR, reason="basicsr not installed (needed for NIQE)")

# Qabf sigmoids at relative strength G and orientation A equal to 1 (Xydeas-Petrovic constants).
QG_AT_1 = 0.9994 / (1 + math.exp(-15 * 0.5))
QA_AT_1 = 0.9879 / (1 + math.exp(-22 * 0.2))


def texture(shape=(64, 64), seed=0) -> np.ndarray:
    """A uint8 image with structure at several scales and no flat region."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = 120 + 60 * np.sin(xx / 4.0) * np.cos(yy / 6.0) + rng.normal(0, 12, shape)
    return np.clip(np.round(base), 0, 255).astype(np.uint8)


# --- colour conversion ------------------------------------------------------------------------------

def test_to_luma_known_pixels():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [10, 20, 30]]],
                   dtype=np.uint8)
    # 76.245 -> 76, 149.685 -> 150, 29.07 -> 29, 255, 0, 2.99 + 11.74 + 3.42 = 18.15 -> 18
    assert M.to_luma(rgb).tolist() == [[76.0, 150.0, 29.0, 255.0, 0.0, 18.0]]


def test_to_luma_keeps_gray_unchanged():
    gray = np.array([[0.0, 2.5], [100.25, 255.0]])
    np.testing.assert_array_equal(M.to_luma(gray), gray)
    np.testing.assert_array_equal(M.to_luma(gray[..., None]), gray)
    equal_channels = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=-1)
    np.testing.assert_array_equal(M.to_luma(equal_channels), np.arange(256).reshape(16, 16))


def test_to_luma_rejects_bad_inputs():
    with pytest.raises(TypeError):
        M.to_luma(np.zeros((4, 4), dtype=np.uint16))
    with pytest.raises(ValueError):
        M.to_luma(np.zeros((4, 4, 4)))


def test_to_luma_matches_opencv_float_path_on_every_tie():
    """Only colours with 299 R + 587 G + 114 B = 1000 k + 500 are exact .5 ties, where float rounding
    decides; every other colour is at least 0.001 from a tie. Check all ties plus random colours."""
    cv2 = pytest.importorskip("cv2")
    red, green = (c.ravel() for c in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    blue_for_residue = np.full(1000, -1)  # 114 B = r (mod 1000) has at most one solution B in 0..255
    blue_for_residue[(114 * np.arange(256)) % 1000] = np.arange(256)
    blue = blue_for_residue[(500 - 299 * red - 587 * green) % 1000]
    ties = np.stack([red, green, blue], -1)[blue >= 0]
    assert len(ties) > 10_000
    random = np.random.default_rng(0).integers(0, 256, (100_000, 3))
    rgb = np.concatenate([ties, random]).astype(np.uint8)[np.newaxis]
    expected = np.round(cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY))
    np.testing.assert_array_equal(M.to_luma(rgb), expected)
    naive = np.round(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    assert (naive != expected).any()  # the ties really are where the plain formula disagrees


# --- single-image metrics ---------------------------------------------------------------------------

def test_entropy_hand_values():
    halves = np.zeros((8, 8), dtype=np.uint8)
    halves[:, 4:] = 200
    assert M.entropy(halves) == pytest.approx(1.0)
    assert M.entropy(np.full((8, 8), 37, dtype=np.uint8)) == 0.0
    four_levels = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    assert M.entropy(np.tile(four_levels, (4, 4))) == pytest.approx(2.0)
    assert M.entropy(np.array([[0.4, 0.6], [0.6, 0.4]])) == pytest.approx(1.0)  # rounded to levels 0 and 1


def test_standard_deviation_hand_value():
    # mean 3, squared deviations 9, 1, 1, 9 -> population variance 5
    assert M.standard_deviation(np.array([[0.0, 2.0], [4.0, 6.0]])) == pytest.approx(math.sqrt(5))


def test_spatial_frequency_and_average_gradient_of_ramp():
    ramp = 3.0 * np.tile(np.arange(6), (5, 1))  # +3 per column, constant down each column
    assert M.spatial_frequency(ramp) == pytest.approx(3.0)
    assert M.spatial_frequency(ramp.T) == pytest.approx(3.0)
    assert M.average_gradient(ramp) == pytest.approx(3.0 / math.sqrt(2))
    diagonal = 3.0 * (np.arange(5)[:, None] + np.arange(6)[None, :])
    # gx = gy = 3 everywhere: SF = sqrt(9 + 9), AG = sqrt((9 + 9) / 2)
    assert M.spatial_frequency(diagonal) == pytest.approx(math.sqrt(18))
    assert M.average_gradient(diagonal) == pytest.approx(3.0)


# --- metrics against the two sources ----------------------------------------------------------------

def test_correlation_coefficient_hand_values():
    f = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert M.correlation_coefficient(f, 2 * f + 1, 3 - f) == pytest.approx(0.0)  # (1 + (-1)) / 2
    assert M.correlation_coefficient(f, f, 5 * f) == pytest.approx(1.0)


def test_scd_of_sum_is_two():
    a = np.array([[0.0, 1.0], [2.0, 7.0]])
    b = np.array([[5.0, 1.0], [3.0, 3.0]])
    # F - B = A and F - A = B, so SCD = corr(A, A) + corr(B, B)
    assert M.sum_of_correlations_of_differences(a + b, a, b) == pytest.approx(2.0)


def test_psnr_fusion_hand_value():
    f = np.array([[0.0, 0.0], [0.0, 4.0]])
    # peak max(F) = 4; MSE to zeros = 16 / 4 = 4, MSE to F = 0, mean 2 -> 10 log10(16 / 2)
    assert M.psnr_fusion(f, np.zeros((2, 2)), f) == pytest.approx(10 * math.log10(8))
    assert M.psnr_fusion(f, f, f) == math.inf


def test_mutual_information_hand_values():
    quadrants = np.zeros((8, 8), dtype=np.uint8)
    quadrants[:4, 4:], quadrants[4:, :4], quadrants[4:, 4:] = 64, 128, 255
    # MI(X, X) = H(X) = ln 4 nats for four equally frequent levels, summed over the two sources
    assert M.mutual_information(quadrants, quadrants, quadrants) == pytest.approx(2 * math.log(4))
    left_right = np.zeros((8, 8), dtype=np.uint8)
    left_right[:, 4:] = 200
    # top/bottom halves are independent of left/right ones: MI = H(F) + 0 = ln 2
    assert M.mutual_information(left_right, left_right, left_right.T) == pytest.approx(math.log(2))


def test_mutual_information_of_copy_is_twice_its_entropy():
    x = texture()
    assert M.mutual_information(x, x, x) == pytest.approx(2 * M.entropy(x) * math.log(2))


def test_ssim_of_copy_is_one_per_source():
    x = texture(seed=1)
    assert M.ssim_fusion(x, x, x) == pytest.approx(2.0)
    assert M.ssim_reference(x, x) == pytest.approx(1.0)


def test_ssim_data_ranges():
    """On constant images SSIM is the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 + C1), C1 = (0.01 L)^2:
    the fusion SSIM uses L = 2 (scikit-image 0.19's float default, as CDDFuse got), the reference one 255."""
    one, two = np.ones((16, 16)), np.full((16, 16), 2.0)
    c1 = (0.01 * 2) ** 2
    assert M.ssim_fusion(one, two, two) == pytest.approx(2 * (4 + c1) / (5 + c1))
    c1 = (0.01 * 255) ** 2
    assert M.ssim_reference(one, two) == pytest.approx((4 + c1) / (5 + c1))


def test_vif_of_copy_is_one_per_source():
    x = texture(seed=2)
    assert M.visual_information_fidelity(x, x, x) == pytest.approx(2.0, abs=1e-6)
    # a source with no variance gives 0 / 0, which the reference code scores as 1
    assert M.visual_information_fidelity(x, x, np.full_like(x, 90)) == pytest.approx(2.0, abs=1e-6)


def test_vif_drops_when_fused_is_noisy():
    x = texture(seed=3).astype(np.float64)
    noisy = x + np.random.default_rng(0).normal(0, 40, x.shape)
    assert M.visual_information_fidelity(noisy, x, x) < 2.0


def test_qabf_of_copy_with_strong_edges():
    step = np.zeros((16, 16))
    step[:, 8:] = 100.0  # every non-zero Sobel magnitude is >= 100, so G's sigmoid is saturated
    assert M.qabf(step, step, step) == pytest.approx(0.9994 * QA_AT_1, rel=1e-9)


def test_qabf_of_copy_stays_between_the_sigmoid_bounds():
    x = texture(seed=4)
    score = M.qabf(x, x, x)
    assert QG_AT_1 * QA_AT_1 - 1e-12 <= score <= 0.9994 * QA_AT_1 + 1e-12  # ~0.9748 .. ~0.9753


def test_qabf_of_flat_fused_image_is_near_zero():
    x = texture(seed=5)
    # G = 0 wherever the sources have edges: sigmoid 0.9994 / (1 + e^7.5) ~ 5.5e-4. (Zero, not another
    # constant: the Sobel filters pad with zeros, so a bright flat image has edges on its border.)
    assert M.qabf(np.zeros_like(x), x, x) < 1e-3


def test_psnr_reference_hand_value():
    assert M.psnr_reference(np.zeros((2, 2)), np.full((2, 2), 5.0)) == pytest.approx(10 * math.log10(255 ** 2 / 25))


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        M.evaluate_fusion(texture((32, 32)), texture((32, 32)), texture((32, 30)), compute_niqe=False)


# --- real pairs ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def msrs_pair(eval_subset):
    folder = eval_subset("msrs_test")
    stem = sorted(p.stem for p in (folder / "ir").glob("*.png"))[0]
    ir = np.asarray(Image.open(folder / "ir" / f"{stem}.png"))
    vi = np.asarray(Image.open(folder / "vi" / f"{stem}.png"))
    return ir, vi


def test_evaluate_fusion_on_real_pair(msrs_pair):
    ir, vi = msrs_pair
    mean_fusion = np.round((M.to_luma(ir) + M.to_luma(vi)) / 2)
    scores = M.evaluate_fusion(mean_fusion, ir, vi, compute_niqe=False)
    assert tuple(scores) == M.METRIC_NAMES
    assert all(math.isfinite(v) for v in scores.values())
    assert 0 <= scores["EN"] <= 8 and scores["MI"] >= 0 and scores["VIF"] >= 0
    assert 0 <= scores["Qabf"] <= 1 and -1 <= scores["CC"] <= 1 and scores["SSIM"] <= 2
    flat = M.evaluate_fusion(np.zeros_like(mean_fusion), ir, vi, compute_niqe=False)
    assert flat["EN"] == 0 and flat["SD"] == 0 and flat["SF"] == 0 and flat["Qabf"] < scores["Qabf"]


def test_matches_cddfuse_evaluator_on_msrs_max_fusion(eval_subset):
    """Reference values from a line-by-line transcription of MMIF-CDDFuse's utils/Evaluator.py (images
    read with its cv2 reader; SSIM with data_range=2, what scikit-image 0.19 used) on the max fusion of
    MSRS pair 00004N. Max fusion copies source edges, so Qabf's gA == gF convention is exercised."""
    folder = eval_subset("msrs_test")
    if not (folder / "ir" / "00004N.png").is_file():
        pytest.skip("MSRS pair 00004N not found")
    ir = np.asarray(Image.open(folder / "ir" / "00004N.png"))
    vi = np.asarray(Image.open(folder / "vi" / "00004N.png"))
    fused = np.maximum(M.to_luma(ir), M.to_luma(vi))
    expected = {"EN": 6.21725, "SD": 30.34262, "SF": 6.54758, "AG": 1.79242, "MI": 4.14707, "SCD": 1.74942,
                "VIF": 1.01539, "Qabf": 0.65939, "SSIM": 0.96858, "CC": 0.68303, "PSNR": 19.95107}
    scores = M.evaluate_fusion(fused, ir, vi, compute_niqe=False)
    assert scores == pytest.approx(expected, abs=1e-5)


def test_evaluate_fusion_with_reference(msrs_pair):
    ir, vi = msrs_pair
    scores = M.evaluate_fusion(vi, ir, vi, ref=vi, compute_niqe=False)
    assert tuple(scores) == M.METRIC_NAMES + ("PSNR_ref", "SSIM_ref")
    assert scores["PSNR_ref"] == math.inf and scores["SSIM_ref"] == pytest.approx(1.0)


@needs_basicsr
def test_niqe_on_real_image(msrs_pair):
    value = M.niqe(msrs_pair[1])
    assert isinstance(value, float) and math.isfinite(value) and value > 0
    noise = np.random.default_rng(0).integers(0, 256, msrs_pair[0].shape[:2]).astype(np.uint8)
    assert M.niqe(noise) > value  # white noise is far from the pristine natural-image model


def test_niqe_needs_two_blocks():
    with pytest.raises(ValueError, match="96x96") as info:
        M.niqe(texture((100, 150)))
    assert "image is 150x100" in str(info.value)  # width x height, like every other message


@needs_basicsr
def test_import_basicsr_registers_the_removed_torchvision_module():
    from torchvision.transforms import functional

    from allinone._compat import import_basicsr

    basicsr = import_basicsr()
    assert hasattr(basicsr.metrics, "calculate_niqe")
    from torchvision.transforms.functional_tensor import rgb_to_grayscale  # what basicsr imports

    assert rgb_to_grayscale is functional.rgb_to_grayscale


# --- LPIPS ----------------------------------------------------------------------------------------

def test_lpips_without_backbone_says_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.delenv(M.LPIPS_BACKBONE_ENV, raising=False)
    x = texture()
    with pytest.raises(M.LPIPSBackboneNotFoundError, match=M.LPIPS_BACKBONE_ENV) as info:
        M.lpips_distance(x, x)
    assert "no path given" in str(info.value)
    missing = tmp_path / "alexnet.pth"
    with pytest.raises(M.LPIPSBackboneNotFoundError, match="not found at") as info:
        M.lpips_distance(x, x, backbone_path=missing)
    assert str(missing) in str(info.value)
    monkeypatch.setenv(M.LPIPS_BACKBONE_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match="alexnet.pth"):
        M.evaluate_fusion(x, x, x, ref=x, compute_niqe=False)
    with pytest.raises(ValueError, match="reference"):
        M.evaluate_fusion(x, x, x, compute_niqe=False, lpips_backbone=missing)


@pytest.fixture(scope="module")
def random_alexnet(tmp_path_factory):
    """torchvision AlexNet ``features`` weights, randomly initialised, saved as a torchvision state dict."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("lpips")
    from torchvision.models import alexnet

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}
    path = tmp_path_factory.mktemp("lpips") / "alexnet-random.pth"
    torch.save(state, path)
    return path


def test_lpips_with_local_backbone(random_alexnet, monkeypatch):
    monkeypatch.delenv(M.LPIPS_BACKBONE_ENV, raising=False)
    x, y = texture(seed=6), texture(seed=7)
    assert M.lpips_distance(x, x, backbone_path=random_alexnet) == pytest.approx(0.0, abs=1e-7)
    assert M.lpips_distance(x, y, backbone_path=random_alexnet) > 0
    colour = np.stack([x, y, x], -1)
    assert M.lpips_distance(colour, colour, backbone_path=random_alexnet) == pytest.approx(0.0, abs=1e-7)
    scores = M.evaluate_fusion(x, x, y, ref=y, compute_niqe=False, lpips_backbone=random_alexnet)
    assert scores["LPIPS"] > 0


def test_lpips_rejects_weights_of_another_network(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("lpips")
    path = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="features.0"):
        M.lpips_distance(texture(), texture(), backbone_path=path)


def test_lpips_rejects_files_that_are_not_weights(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("lpips")
    png = tmp_path / "ir.png"
    Image.fromarray(texture()).save(png)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    for path, why in [(png, "torch.load fails"), (tensor, "holds a Tensor")]:
        with pytest.raises(ValueError, match="not a usable LPIPS backbone weights file") as info:
            M.lpips_distance(texture(), texture(), backbone_path=path)
        assert str(path) in str(info.value) and why in str(info.value)


# --- the ``allinone metrics`` command -------------------------------------------------------------

def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    metrics_command.register(parser.add_subparsers())
    return parser.parse_args(["metrics", *argv])


@pytest.fixture()
def fused_folder(eval_subset, tmp_path):
    """Mean fusion of the first two MSRS pairs, as PNGs in a temporary folder."""
    folder = eval_subset("msrs_test")
    fused = tmp_path / "fused"
    fused.mkdir()
    for path in sorted((folder / "ir").glob("*.png"))[:2]:
        ir = M.to_luma(np.asarray(Image.open(path)))
        vi = M.to_luma(np.asarray(Image.open(folder / "vi" / path.name)))
        Image.fromarray(np.round((ir + vi) / 2).astype(np.uint8)).save(fused / path.name)
    return folder, fused


@needs_basicsr
def test_cli_writes_csv_and_refuses_to_overwrite(fused_folder, tmp_path, capsys):
    from allinone.outputs import OutputError

    folder, fused = fused_folder
    out = tmp_path / "scores.csv"
    argv = ["--ir", str(folder / "ir"), "--vi", str(folder / "vi"), "--fused", str(fused), "--csv", str(out)]
    args = parse(argv)
    assert args.func(args) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", *M.METRIC_NAMES, "NIQE"]
    assert [r["image"] for r in rows] == sorted(p.stem for p in fused.iterdir()) + ["mean"]
    assert float(rows[2]["EN"]) == pytest.approx((float(rows[0]["EN"]) + float(rows[1]["EN"])) / 2)
    printed = capsys.readouterr().out
    assert "Qabf" in printed and "mean" in printed

    before = out.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        args.func(args)
    assert out.read_bytes() == before


def write_images(folder, images: dict[str, np.ndarray]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in images.items():
        Image.fromarray(array).save(folder / name)
    return folder


def test_cli_overwrites_csv_only_when_asked(tmp_path):
    from allinone.outputs import OutputError

    ir = write_images(tmp_path / "ir", {"a.png": texture((48, 64), seed=1)})
    vi = write_images(tmp_path / "vi", {"a.png": np.stack([texture((48, 64), seed=s) for s in (2, 3, 4)], -1)})
    fused = write_images(tmp_path / "fused", {"a.png": texture((48, 64), seed=5)})
    out = tmp_path / "scores.csv"
    out.write_text("old\n")
    args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused), "--csv", str(out), "--no-niqe"])
    with pytest.raises(OutputError, match="--overwrite"):
        args.func(args)
    assert out.read_text() == "old\n"
    args.overwrite = True
    assert args.func(args) == 0
    with out.open() as f:
        assert next(csv.reader(f)) == ["image", *M.METRIC_NAMES]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def small_folders(tmp_path, shape=(48, 64), **shapes):
    """--ir, --vi and --fused folders of one image ``a.png`` each, ``shape`` unless ``shapes`` says otherwise."""
    return [write_images(tmp_path / role, {"a.png": texture(shapes.get(role, shape), seed=seed)})
            for seed, role in enumerate(("ir", "vi", "fused"))]


def test_cli_never_writes_csv_over_an_input(tmp_path):
    from allinone.outputs import OutputError

    ir, vi, fused = small_folders(tmp_path)
    for target in (ir / "a.png", vi / "a.png", fused / "a.png", vi):
        before = {p: p.read_bytes() for folder in (ir, vi, fused) for p in folder.iterdir()}
        args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused), "--no-niqe",
                      "--csv", str(target), "--overwrite"])
        with pytest.raises(OutputError, match="is an input"):
            args.func(args)
        assert {p: p.read_bytes() for folder in (ir, vi, fused) for p in folder.iterdir()} == before


def test_cli_creates_the_folder_of_csv(tmp_path):
    ir, vi, fused = small_folders(tmp_path)
    out = tmp_path / "new" / "sub" / "scores.csv"
    args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused), "--no-niqe", "--csv", str(out)])
    assert args.func(args) == 0
    assert out.read_text().startswith("image,EN,")


def test_cli_rejects_a_file_that_is_not_lpips_weights(tmp_path):
    pytest.importorskip("lpips")
    from allinone.cli import UserError

    ir, vi, fused = small_folders(tmp_path)
    args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused), "--no-niqe", "--ref", str(vi),
                  "--lpips-backbone", str(ir / "a.png")])
    with pytest.raises(UserError, match="not a usable LPIPS backbone weights file") as info:
        args.func(args)
    assert str((ir / "a.png").resolve()) in str(info.value) and "weights_only" not in str(info.value)


def test_cli_niqe_on_a_small_image_says_width_x_height_and_how_to_skip(tmp_path):
    from allinone.cli import UserError

    ir, vi, fused = small_folders(tmp_path, (48, 64))
    args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused)])
    with pytest.raises(UserError, match="--no-niqe") as info:
        args.func(args)
    assert str(fused / "a.png") in str(info.value) and "image is 64x48" in str(info.value)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("shape", [(1, 1), (500, 3), (3, 500), (40, 200)])
def test_cli_rejects_images_too_small_for_the_metrics(tmp_path, shape):
    from allinone.cli import UserError

    ir, vi, fused = small_folders(tmp_path, shape)
    args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused), "--no-niqe"])
    with pytest.raises(UserError, match=f"at least {M.MIN_SIDE}x{M.MIN_SIDE} pixels") as info:
        args.func(args)
    assert str(fused / "a.png") in str(info.value) and f"{shape[1]}x{shape[0]}" in str(info.value)


@pytest.mark.filterwarnings("error")
def test_min_side_is_where_every_vif_scale_counts(tmp_path, monkeypatch):
    """At MIN_SIDE the command scores without a warning and VIF's coarsest scale holds a pixel; one less
    and it is empty, so VIF would silently be a sum over fewer scales."""
    ir, vi, fused = small_folders(tmp_path, (M.MIN_SIDE, M.MIN_SIDE))
    args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused), "--no-niqe", "--ref", str(vi)])
    assert args.func(args) == 0

    sizes = []  # of every filtered map; the last is the coarsest scale's covariance
    filter_valid = M._filter_valid

    def recording(image, window):
        filtered = filter_valid(image, window)
        sizes.append(filtered.size)
        return filtered

    monkeypatch.setattr(M, "_filter_valid", recording)
    for side, coarsest in [(M.MIN_SIDE, 1), (M.MIN_SIDE - 1, 0)]:
        M.visual_information_fidelity(*(texture((side, side), seed) for seed in range(3)))
        assert sizes[-1] == coarsest


def test_cli_size_mismatch_names_the_source_that_differs(tmp_path):
    from allinone.cli import UserError

    ir, vi, fused = small_folders(tmp_path, (48, 64), ir=(60, 80))
    args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused), "--no-niqe"])
    with pytest.raises(UserError) as info:
        args.func(args)
    assert f"IR {ir / 'a.png'} is 80x60 but the fused image {fused / 'a.png'} is 64x48" in str(info.value)


def test_cli_errors_name_the_file(tmp_path):
    from allinone.cli import UserError

    ir = write_images(tmp_path / "ir", {"a.png": texture((16, 16))})
    vi = write_images(tmp_path / "vi", {"a.png": texture((16, 20))})
    fused = write_images(tmp_path / "fused", {"a.png": texture((16, 16))})
    args = parse(["--ir", str(ir), "--vi", str(vi), "--fused", str(fused), "--no-niqe"])
    with pytest.raises(UserError, match="size mismatch") as info:
        args.func(args)
    assert str(vi / "a.png") in str(info.value) and "20x16" in str(info.value)

    (fused / "a.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image") as info:
        args.func(args)
    assert str(fused / "a.png") in str(info.value)

    write_images(fused, {"a.png": texture((16, 16)), "b.png": texture((16, 16))})
    with pytest.raises(UserError, match=r"ir for b\.png: no b\.\*") as info:
        args.func(args)
    assert str(ir) in str(info.value)

    args.lpips_backbone = str(tmp_path / "none.pth")
    with pytest.raises(UserError, match="--ref"):
        args.func(args)
    args.ref = str(vi)
    with pytest.raises(FileNotFoundError, match="none.pth"):
        args.func(args)


def test_cli_main_exit_code(tmp_path, capsys, monkeypatch):
    from allinone import cli

    if "metrics" not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "metrics"))
    ir = write_images(tmp_path / "ir", {"a.png": texture((16, 16))})
    fused = write_images(tmp_path / "fused", {"a.png": texture((16, 24))})
    rc = cli.main(["--threads", "1", "metrics", "--ir", str(ir), "--vi", str(ir), "--fused", str(fused)])
    assert rc != 0
    assert "size mismatch" in capsys.readouterr().err
