"""Workflows that chain the stages: a training run with validation, adaptation studies, the demo."""
