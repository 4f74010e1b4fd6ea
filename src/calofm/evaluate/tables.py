"""The markdown tables of calofm's reports (evaluation, adaptation study, additive-growth sequence)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], compact: bool = False) -> list[str]:
    """The lines of a markdown table: the header, the rule, then one line per row of cells (any values).

    The rule is ``| --- | --- |``, or ``|---|---|`` when ``compact``. An empty cell is written as
    a single space (``| |``).
    """
    rule = "|" + "---|" * len(headers) if compact else _line(["---"] * len(headers))
    return [_line(headers), rule, *(_line(row) for row in rows)]


def _line(cells: Sequence[object]) -> str:
    return "|" + "|".join(" " if cell == "" else f" {cell} " for cell in cells) + "|"
