"""Deployment: the one-step generator as ONNX or TorchScript, with the sampler inside the graph."""

from calofm.export.generator import FORMATS, ExportGraph, export, exportable

__all__ = ["FORMATS", "ExportGraph", "export", "exportable"]
