"""The ``calofm`` command line."""
