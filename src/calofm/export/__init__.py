"""Deployment: the one-step generator as ONNX or TorchScript, with the sampler inside the graph."""

from calofm.export.generator import FORMATS, OneStepGenerator, export

__all__ = ["FORMATS", "OneStepGenerator", "export"]
