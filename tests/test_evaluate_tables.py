"""The one markdown table writer of the reports."""

from calofm.evaluate.tables import markdown_table


def test_markdown_tables_in_both_rule_styles():
    assert markdown_table(("metric", "model"), [("FPD", "1.2 ± 0.1"), ("AUC", 0.5)]) == [
        "| metric | model |", "| --- | --- |", "| FPD | 1.2 ± 0.1 |", "| AUC | 0.5 |"]
    assert markdown_table(("strategy", "100", "mean"), [("floor", "0.40", "")], compact=True) == [
        "| strategy | 100 | mean |", "|---|---|---|", "| floor | 0.40 | |"]
    assert markdown_table(("a",), []) == ["| a |", "| --- |"]
