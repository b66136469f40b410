import torch
from torch.utils.data import DataLoader

from degradations.dataset import TripletDataset
from degradations.labels import DEGRADATION_TYPES
from degradations.pairs import find_pairs

from helpers import make_pair_folders


def _dataset(tmp_path, **kwargs):
    ir_dir, vi_dir = make_pair_folders(tmp_path, names=("a", "b"), size=(70, 50))
    return TripletDataset(find_pairs(ir_dir, vi_dir), crop=32, samples_per_epoch=12, seed=3, **kwargs)


def test_items_have_the_documented_shapes_and_labels(tmp_path):
    ds = _dataset(tmp_path, clean_fraction=0.0)
    item = ds[0]
    assert item["ir"].shape == item["ir_clean"].shape == (1, 32, 32)
    assert item["vi"].shape == item["vi_clean"].shape == (3, 32, 32)
    assert item["labels"].shape == (len(DEGRADATION_TYPES),)
    assert item["labels"].sum() > 0 and item["prompt"]
    for key in ("ir", "vi", "ir_clean", "vi_clean"):
        assert 0 <= item[key].min() and item[key].max() <= 1


def test_same_seed_same_items_and_epochs_differ(tmp_path):
    a, b = _dataset(tmp_path), _dataset(tmp_path)
    for i in range(6):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in ("ir", "vi", "ir_clean", "vi_clean", "labels"))
        assert x["prompt"] == y["prompt"]
    b.set_epoch(1)
    assert not all(torch.equal(a[i]["vi"], b[i]["vi"]) for i in range(6))


def test_clean_items_are_undegraded(tmp_path):
    ds = _dataset(tmp_path, clean_fraction=1.0)
    item = ds[1]
    assert torch.equal(item["ir"], item["ir_clean"]) and item["labels"].sum() == 0 and item["prompt"] == ""


def test_crop_larger_than_image_and_two_worker_loader(tmp_path):
    ds = _dataset(tmp_path)
    ds.crop = 64  # larger than the 50-pixel height: padded, not failing
    assert ds[2]["vi"].shape == (3, 64, 64)
    ds.crop = 32
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == 3 and batches[0]["vi"].shape == (4, 3, 32, 32)
    direct = torch.stack([ds[i]["vi"] for i in range(4)])
    assert torch.equal(batches[0]["vi"], direct)  # workers give the same items as the main process


def test_from_root_finds_every_pair_folder(tmp_path):
    make_pair_folders(tmp_path / "x", names=("a", "b"))
    make_pair_folders(tmp_path / "y", names=("a",))
    ds = TripletDataset.from_root(tmp_path, crop=16)
    assert sorted(p.name for p in ds.pairs) == ["x/a", "x/b", "y/a"]


def test_a_repeated_recipe_is_drawn_in_proportion(tmp_path):
    ds = _dataset(tmp_path, clean_fraction=0.0, recipes=["noise", "noise", "noise", "blur"])
    ds.samples_per_epoch = 400
    drawn = [ds._draw(i)[2] for i in range(400)]
    assert set(drawn) == {"noise", "blur"}
    assert 0.65 < drawn.count("noise") / 400 < 0.85
