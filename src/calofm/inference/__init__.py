"""Inference: loading a trained model and generating showers from it."""

from calofm.inference.generators import (
    CALIBRATION,
    CountModel,
    PointCloudModel,
    TokenModel,
    TrainedModel,
    load_model,
    trained_model,
)
from calofm.inference.shipped import resolve, shipped_names

__all__ = ["CALIBRATION", "CountModel", "PointCloudModel", "TokenModel", "TrainedModel", "load_model", "resolve",
           "shipped_names", "trained_model"]
