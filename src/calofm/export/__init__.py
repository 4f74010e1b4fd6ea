"""Deployment: a one-step generator as ONNX or TorchScript, with the sampler and decoding inside the graph."""

from calofm.export.generator import CONTRACTS, FORMATS, ExportGraph, export, export_problem

__all__ = ["CONTRACTS", "FORMATS", "ExportGraph", "export", "export_problem"]
