"""Argument types of the ``calofm`` commands: a value out of range is refused by the parser, in one
line naming the option, before any work starts."""

from __future__ import annotations

import argparse
import math


def _number(kind, text: str, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: v > 0, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 0, "a non-negative integer")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    return _number(float, text, lambda v: v >= 0, "a non-negative number")


def fraction(text: str) -> float:
    """A fraction in [0, 1)."""
    return _number(float, text, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def probability(text: str) -> float:
    """A probability in (0, 1]."""
    return _number(float, text, lambda v: 0 < v <= 1, "a probability in (0, 1]")


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line like calofm's own errors (the usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
