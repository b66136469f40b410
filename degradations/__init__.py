"""The IR/VIS degradation synthesizer: physically motivated ops, recipes, benchmarks, training triplets.

Importable on its own (it does not import ``allinone``). The ops are pure functions on (B, C, H, W)
tensors in [0, 1]; ``recipes.plan`` samples which ops hit a pair and ``recipes.apply_steps`` applies them.
"""
from .labels import DEGRADATION_TYPES, label_vector
from .recipes import RECIPES, Plan, Step, apply_steps, item_seed, plan

__all__ = ["DEGRADATION_TYPES", "RECIPES", "Plan", "Step", "apply_steps", "item_seed", "label_vector", "plan"]
