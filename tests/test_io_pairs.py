import numpy as np
import pytest
import torch
from PIL import Image

from degradations.io import ImageReadError, read_ir, read_vis, to_uint8, write_png
from degradations.pairs import PairingError, discover_pair_folders, find_pairs, load_pair, require_same_sizes

from helpers import make_pair_folders


def test_ir_rgb_file_is_read_as_one_channel_luminance(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 200, 50
    Image.fromarray(rgb).save(tmp_path / "x.png")
    ir = read_ir(tmp_path / "x.png")
    assert ir.shape == (1, 1, 5, 7)
    expected = (0.299 * 100 + 0.587 * 200 + 0.114 * 50) / 255
    assert torch.allclose(ir, torch.full_like(ir, expected), atol=1e-6)


def test_ir_16bit_is_scaled_by_its_range(tmp_path):
    arr = np.full((4, 6), 32768, np.uint16)
    Image.fromarray(arr).save(tmp_path / "t.png")
    assert read_ir(tmp_path / "t.png").mean().item() == pytest.approx(32768 / 65535, abs=1e-6)
    arr14 = np.full((4, 6), 8191, np.uint16)  # mid-scale of a 14-bit sensor
    Image.fromarray(arr14).save(tmp_path / "t14.png")
    assert read_ir(tmp_path / "t14.png", bits=14).mean().item() == pytest.approx(8191 / 16383, abs=1e-6)
    for bits in (0, 17, 2000):  # 2 ** 2000 overflowed a float before bits were checked
        with pytest.raises(ValueError, match="1..16"):
            read_ir(tmp_path / "t14.png", bits=bits)


def test_vis_gray_stays_one_channel_and_colour_keeps_three(tmp_path):
    gray = np.random.default_rng(0).integers(0, 255, (6, 5), np.uint8)
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "g.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (6, 5, 3), np.uint8)).save(tmp_path / "c.png")
    assert read_vis(tmp_path / "g.png").shape == (1, 1, 6, 5)
    assert read_vis(tmp_path / "c.png").shape == (1, 3, 6, 5)


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="broken.png: cannot read image \\(not an image in a format"):
        read_vis(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png: cannot read image \\(the file is empty\\)"):
        read_ir(empty)


def test_png_round_trip_is_exact_for_8bit_values(tmp_path):
    x = torch.randint(0, 256, (1, 3, 9, 11)).float() / 255
    write_png(tmp_path / "o.png", x)
    assert torch.equal(read_vis(tmp_path / "o.png"), x)
    assert to_uint8(x).shape == (9, 11, 3)
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_partners_are_listed(tmp_path):
    ir_dir, vi_dir = make_pair_folders(tmp_path, names=("a", "b"))
    (ir_dir / "b.png").rename(ir_dir / "only_ir.png")
    with pytest.raises(PairingError) as info:
        find_pairs(ir_dir, vi_dir)
    assert "only_ir.png" in str(info.value) and "b.png" in str(info.value)


def test_size_mismatch_is_reported_and_resize_aligns(tmp_path):
    ir_dir, vi_dir = make_pair_folders(tmp_path, names=("a",))
    Image.open(ir_dir / "a.png").resize((24, 20)).save(ir_dir / "a.png")
    pairs = find_pairs(ir_dir, vi_dir)
    with pytest.raises(PairingError) as info:
        require_same_sizes(pairs)
    assert "1 pair(s)" in str(info.value) and "24x20" in str(info.value) and "48x40" in str(info.value)
    with pytest.raises(PairingError, match="--align resize"):
        load_pair(pairs[0], "error", None)
    ir, vi = load_pair(pairs[0], "resize", None)
    assert ir.shape[-2:] == vi.shape[-2:] == (40, 48)


def test_discover_pair_folders(tmp_path):
    make_pair_folders(tmp_path / "set1")
    make_pair_folders(tmp_path / "deep" / "set2")
    found = discover_pair_folders(tmp_path)
    assert sorted(f.name for f in found) == ["set1", "set2"]
    with pytest.raises(PairingError):
        discover_pair_folders(tmp_path / "set1" / "ir")
