"""Transfer strategies for adapting a pre-trained backbone to a new detector."""

from calofm.adapt.strategies import ARGS, DEFAULT_LR, REINIT_LR_MULT, STRATEGIES, Adaptation, apply, restore

__all__ = ["ARGS", "DEFAULT_LR", "REINIT_LR_MULT", "STRATEGIES", "Adaptation", "apply", "restore"]
