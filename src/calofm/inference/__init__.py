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

__all__ = ["CALIBRATION", "CountModel", "PointCloudModel", "TokenModel", "TrainedModel", "load_model",
           "trained_model"]
