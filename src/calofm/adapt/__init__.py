"""Transfer strategies for adapting a pre-trained backbone to a new detector."""

from calofm.adapt.strategies import REINIT_LR_MULT, STRATEGIES, Adaptation, Strategy, apply, restore

__all__ = ["REINIT_LR_MULT", "STRATEGIES", "Adaptation", "Strategy", "apply", "restore"]
