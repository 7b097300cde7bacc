"""The run's summary table (``format_summary``)."""
import re

from lt_bench.pipeline import METRIC_KEYS, format_summary


def summary_record(stage, method, top1, few=0.0, ece=5.0):
    return {"stage": stage, "method": method, "top1": top1, "top5": 99.0, "many": 100.0, "medium": 60.0,
            "few": few, "ece": ece}


def column_ends(line):
    """Where each whitespace-separated entry ends."""
    return [m.end() for m in re.finditer(r"\S+", line)]


def test_summary_fits_its_longest_method_name():
    """logit_adjust, balanced_softmax or any longer name: every row keeps the header's column
    positions (each column as wide as its longest entry)."""
    records = [summary_record(1, "softmax", 34.0), summary_record(2, "logit_adjust", 37.0, few=None),
               summary_record(2, "balanced_softmax_with_a_long_name", 4.8, ece=100.0),
               summary_record(None, "cb_focal", 1234.5)]
    lines = format_summary(records).splitlines()
    head, rule, rows = lines[0], lines[1], lines[2:]
    assert len(rows) == 4 and set(rule) == {"-"}
    assert {len(line) for line in lines} == {len(head)}
    ends = column_ends(head)[2:]                              # the metrics: right-aligned under their names
    assert len(ends) == len(METRIC_KEYS)
    for row in rows:
        assert column_ends(row)[2:] == ends, row
        assert row.index(row.split()[1]) == head.index("method")   # the method column starts with its heading
    assert rows[1].split() == ["2", "logit_adjust", "37.00", "99.00", "100.00", "60.00", "-", "5.00"]
    assert rows[3].split()[:3] == ["-", "cb_focal", "1234.50"]


def test_summary_of_short_names_keeps_the_readme_layout():
    text = format_summary([summary_record(1, "softmax", 87.4, few=74.8, ece=6.41),
                           summary_record(2, "gumbel", 87.6, few=75.6, ece=5.16)])
    assert text.splitlines() == [
        "stage method        top1    top5    many  medium     few     ece",
        "----------------------------------------------------------------",
        "1     softmax      87.40   99.00  100.00   60.00   74.80    6.41",
        "2     gumbel       87.60   99.00  100.00   60.00   75.60    5.16"]
