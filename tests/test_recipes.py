import random

import pytest
import torch

from degradations.labels import DEGRADATION_TYPES, label_vector, parse_degradation_spec
from degradations.prompts import PROMPTS, draw_prompt
from degradations.recipes import PHYSICAL_ORDER, RECIPES, Step, apply_steps, item_seed, plan
from degradations.severity import LEVELS


def _pair(h=40, w=52, seed=0):
    """A random pair on the 8-bit grid, as images read from files are."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (1, 1, h, w), generator=g) / 255.0,
            torch.randint(0, 256, (1, 3, h, w), generator=g) / 255.0)


def test_required_recipes_exist():
    for name in ("night", "haze", "noise", "blur", "lowres", "ir_stripe", "mixed"):
        assert name in RECIPES


def test_item_seed_depends_only_on_its_arguments():
    assert item_seed(1, "a", "haze", 3) == item_seed(1, "a", "haze", 3)
    assert len({item_seed(1, "a", "haze", 3), item_seed(2, "a", "haze", 3), item_seed(1, "b", "haze", 3),
                item_seed(1, "a", "night", 3), item_seed(1, "a", "haze", 4)}) == 5
    assert 0 <= item_seed(0, "x", "y", 1) < 2**63


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("level", [1, 3, 5])
def test_plan_is_deterministic_and_applies(recipe, level):
    a, b = plan(recipe, level, 123), plan(recipe, level, 123)
    assert a.steps == b.steps and a.prompt == b.prompt
    ir, vi = _pair()
    depth = torch.linspace(0, 1, 40).view(1, 1, 40, 1).expand(1, 1, 40, 52)
    out1 = apply_steps(a.steps, ir, vi, depth)
    out2 = apply_steps(b.steps, ir, vi, depth)
    for x, y, src in zip(out1, out2, (ir, vi)):
        assert torch.equal(x, y) and x.shape == src.shape
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, torch.round(x * 255) / 255)  # 8-bit levels, as a camera writes them
    assert a.prompt[0].isupper()


def test_quantize_false_keeps_the_floats_and_no_steps_keep_the_pair():
    ir, vi = _pair()
    steps = plan("haze", 3, 5).steps
    depth = torch.linspace(0, 1, 40).view(1, 1, 40, 1).expand(1, 1, 40, 52)
    floats = apply_steps(steps, ir, vi, depth, quantize=False)[1]
    rounded = apply_steps(steps, ir, vi, depth)[1]
    assert not torch.equal(floats, torch.round(floats * 255) / 255)
    assert torch.equal(rounded, torch.round(floats * 255) / 255)
    unquantized = torch.rand(1, 1, 8, 8)
    assert apply_steps([], unquantized, unquantized)[0] is unquantized


def test_night_touches_only_visible_and_haze_is_weaker_in_ir():
    ir, vi = _pair()
    steps = plan("night", 4, 7).steps
    ir_d, vi_d = apply_steps(steps, ir, vi)
    assert torch.equal(ir_d, ir) and not torch.equal(vi_d, vi)
    assert vi_d.mean() < vi.mean()

    for level, most in ((2, 0.08), (5, 0.5)):  # haze: IR extinction far below VIS; fog: closer to it
        params = {s.modality: s.params for s in plan("haze", level, 7).steps}
        assert params["ir"]["beta"] <= most * params["vi"]["beta"]
        assert params["ir"]["near"] == params["vi"]["near"]  # one scene geometry for both cameras


def test_ir_stripe_touches_only_ir_and_motion_blur_is_shared():
    steps = plan("ir_stripe", 3, 1).steps
    assert {s.modality for s in steps} == {"ir"}
    for seed in range(40):
        steps = plan("blur", 3, seed).steps
        if steps[0].op == "motion_blur":
            assert steps[0].params == steps[1].params
            break
    else:
        pytest.fail("no motion blur drawn in 40 seeds")


def test_mixed_composes_one_to_three_in_physical_order():
    counts = set()
    for seed in range(200):
        p = plan("mixed", 3, seed)
        counts.add(len(p.degradations))
        assert p.degradations == sorted(p.degradations, key=PHYSICAL_ORDER.index)
        assert not {"lowlight", "overexposure"} <= set(p.degradations)
        assert set(p.levels) == set(p.degradations)
    assert counts == {1, 2, 3}


def test_severity_grows_with_level():
    low, high = plan("noise", 1, 5), plan("noise", 5, 5)
    sigma = lambda p: [s.params["sigma"] for s in p.steps if s.op == "gaussian_noise" and s.modality == "vi"][0]
    assert sigma(high) > sigma(low)
    for degradation, params in LEVELS.items():
        for name, ranges in params.items():
            assert len(ranges) == 5, (degradation, name)
            assert all(lo <= hi for lo, hi in ranges)


def test_step_round_trips_through_dict():
    step = plan("rain", 2, 3).steps[0]
    assert Step.from_dict(step.to_dict()) == step


def test_prompt_banks_are_large_and_composites_join():
    for name in DEGRADATION_TYPES:
        assert len(set(PROMPTS[name])) >= 10, name
    text = draw_prompt(random.Random(0), ["haze", "noise"])
    assert "," in text and any(p.lower() in text.lower() for p in PROMPTS["haze"])


def test_label_vector_and_spec():
    vec = label_vector({"haze": 3, "lowlight": 5})
    assert vec[DEGRADATION_TYPES.index("haze")] == pytest.approx(0.6)
    assert vec[DEGRADATION_TYPES.index("lowlight")] == 1.0 and vec.sum() == pytest.approx(1.6)
    assert parse_degradation_spec("haze:3, lowlight:2") == {"haze": 3, "lowlight": 2}
    with pytest.raises(ValueError):
        parse_degradation_spec("fog:3")
    for spec, message in [("haze:9", "1..5"), ("haze:0", "1..5"), ("haze", "NAME:LEVEL"),
                          ("haze:abc", "whole-number"), ("haze:3,haze:1", "twice")]:
        with pytest.raises(ValueError, match=message):
            parse_degradation_spec(spec)


def test_levels_from_vector_inverts_label_vector():
    from degradations.labels import label_vector, levels_from_vector

    levels = {"haze": 3, "noise": 1, "ir_stripe": 5}
    assert levels_from_vector(label_vector(levels)) == levels
    assert levels_from_vector(label_vector(levels) + 0.08) == levels  # rounds to the nearest level
    assert levels_from_vector(label_vector({}) + 0.05) == {}
    with pytest.raises(ValueError, match="entries"):
        levels_from_vector(torch.zeros(3))
