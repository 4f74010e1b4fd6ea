"""Shower data: in-memory batches, file formats (read and write), splits and subsets."""

from calofm.data.files import ShowerFile, ShowerWriter, open_showers, write_showers
from calofm.data.formats import FORMATS
from calofm.data.showers import PointClouds, Showers
from calofm.data.splits import nested_subset, split_indices

__all__ = ["FORMATS", "PointClouds", "ShowerFile", "ShowerWriter", "Showers", "nested_subset",
           "open_showers", "split_indices", "write_showers"]
