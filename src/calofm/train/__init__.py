"""One training loop for every model family: config, schedules, EMA, checkpoints, DDP, run assembly."""

from calofm.train.config import RunConfig, load_config
from calofm.train.loop import Trainer
from calofm.train.run import assemble

__all__ = ["RunConfig", "Trainer", "assemble", "load_config"]
