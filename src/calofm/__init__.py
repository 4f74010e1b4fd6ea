"""calofm: transferable generative calorimeter shower simulation."""

__version__ = "0.1.0"
