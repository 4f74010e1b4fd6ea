"""One training loop for every model family: config, schedules, EMA, checkpoints, DDP, run assembly."""

from calofm.train.config import RunConfig, load_config
from calofm.train.loop import Trainer
from calofm.train.run import TrainedModel, assemble, load_model

__all__ = ["RunConfig", "TrainedModel", "Trainer", "assemble", "load_config", "load_model"]
