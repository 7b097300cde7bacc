"""Leaderboard tables as Markdown, CSV, LaTeX, HTML or JSON.

Text formats (md, latex, html) show 2 decimals and "-" for a missing cell; csv and json
carry one cell per (row, column, metric), its numbers (mean, std, paper, delta) rounded to
the same 2 decimals as the text (csv writes them as "46.00"), empty/null where missing, and
an integral imbalance as an integer (100, not 100.0).
"""
from __future__ import annotations

import csv
import html
import io
import json
import re
from typing import Any

from lt_bench.errors import ConfigError
from lt_bench.leaderboard_table import SETTING, Cell, Row, Table

FIELDS = ("row", "kind", "task", "imbalance", "version", "model", "metric", "mean", "std", "n", "paper",
          "delta", "reference", "setup_hash")
MISSING = "-"
DECIMALS = 2
NUMBERS = ("mean", "std", "paper", "delta")    # the fields shown with DECIMALS decimals


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, DECIMALS)


def _setting(value):
    """An imbalance of 100.0 is written 100; 12.5 stays; a version is text."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def cell_dicts(tables: list[Table]) -> list[dict[str, Any]]:
    """One dict per (row, column, metric), every table, in display order."""
    out = []
    for table in tables:
        for row in table.rows:
            for column in table.columns:
                for metric in table.metrics:
                    cell = table.cell(row, column, metric)
                    out.append({
                        "row": row.label, "kind": table.kind, "task": column.task,
                        "imbalance": _setting(column.setting) if SETTING[table.kind] == "imbalance" else None,
                        "version": column.setting if SETTING[table.kind] == "version" else None,
                        "model": column.model, "metric": metric, "mean": _rounded(cell.mean),
                        "std": _rounded(cell.std), "n": cell.n, "paper": _rounded(cell.paper),
                        "delta": _rounded(cell.delta), "reference": row.reference,
                        "setup_hash": cell.setup_hash})
    return out


def cell_text(cell: Cell, row: Row, pm: str = "±", delta: str = "Δ") -> str:
    """'46.00 ± 0.71 (n=3) Δ +0.50'; a single run '84.60 (n=1)' (no std); a paper cell is its number."""
    if cell.mean is None:
        return MISSING
    if row.reference:
        return f"{cell.mean:.2f}"
    std = "" if cell.std is None else f" {pm} {cell.std:.2f}"
    text = f"{cell.mean:.2f}{std} (n={cell.n})"
    return text if cell.delta is None else f"{text} {delta} {cell.delta:+.2f}"


def _caption(table: Table) -> str:
    return (f"{table.kind}: {', '.join(table.metrics)} (%), mean +/- sample std over seeds (n seeds), "
            f"delta = ours - paper")


def _headers(table: Table) -> list[tuple[str, str]]:
    """(column label, metric) of each value column."""
    return [(c.label, m) for c in table.columns for m in table.metrics]


_MD_SPECIAL = {"\\": "\\\\", "|": "\\|", "<": "&lt;", ">": "&gt;", "&": "&amp;", "\r\n": " ", "\r": " ", "\n": " "}


def md_escape(text: str) -> str:
    """One table cell of literal text: a backslash or ``|`` cannot end the cell, a line break
    cannot end the row, and ``<``, ``>``, ``&`` show as themselves, never as HTML."""
    return re.sub(r"\r\n|[\\|<>&\r\n]", lambda m: _MD_SPECIAL[m.group()], text)


def _md_headers(table: Table) -> list[str]:
    """Markdown has one header row: a column's label heads its first metric only
    ('cifar100lt ib=100 resnet32 top1 | many | few'), not every one of them."""
    if len(table.metrics) == 1:
        return [c.label for c in table.columns]
    return [f"{c.label} {m}" if i == 0 else m for c in table.columns for i, m in enumerate(table.metrics)]


def render_md(table: Table) -> str:
    heads = _md_headers(table)
    lines = [f"### {md_escape(_caption(table))}", "",
             "| " + " | ".join(md_escape(h) for h in ["method", *heads]) + " |",
             "| --- |" + " ---: |" * len(heads)]
    for row in table.rows:
        texts = [cell_text(table.cell(row, c, m), row) for c in table.columns for m in table.metrics]
        lines.append("| " + " | ".join(md_escape(t) for t in [row.label, *texts]) + " |")
    if table.notes:
        lines += ["", *(f"- {md_escape(note)}" for note in table.notes)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIAL[m.group()], text)


def render_latex(table: Table) -> str:
    k = len(table.metrics)
    lines = [f"% {_caption(table)}", r"\begin{tabular}{l" + "r" * (k * len(table.columns)) + "}", r"\toprule"]
    if k == 1:
        lines.append(" & ".join(["method", *(latex_escape(c.label) for c in table.columns)]) + r" \\")
    else:
        groups = [rf"\multicolumn{{{k}}}{{c}}{{{latex_escape(c.label)}}}" for c in table.columns]
        lines.append(" & ".join(["", *groups]) + r" \\")
        lines.append(" ".join(rf"\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}" for i in range(len(table.columns))))
        lines.append(" & ".join(["method", *(latex_escape(m) for _, m in _headers(table))]) + r" \\")
    lines.append(r"\midrule")
    for row in table.rows:
        label = latex_escape(row.label)
        texts = [latex_escape(cell_text(table.cell(row, c, m), row, pm="@PM@", delta="@DELTA@"))
                 .replace("@PM@", r"$\pm$").replace("@DELTA@", r"$\Delta$")
                 for c in table.columns for m in table.metrics]
        lines.append(" & ".join([rf"\textit{{{label}}}" if row.reference else label, *texts]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", *(f"% {note}" for note in table.notes)]
    return "\n".join(lines) + "\n"


def render_html(table: Table) -> str:
    k, esc = len(table.metrics), html.escape
    lines = [f'<table class="lt-leaderboard" data-kind="{esc(table.kind)}">',
             f"<caption>{esc(_caption(table))}</caption>", "<thead>"]
    if k == 1:
        lines.append("<tr><th>method</th>" + "".join(f"<th>{esc(c.label)}</th>" for c in table.columns) + "</tr>")
    else:
        lines.append('<tr><th rowspan="2">method</th>'
                     + "".join(f'<th colspan="{k}">{esc(c.label)}</th>' for c in table.columns) + "</tr>")
        lines.append("<tr>" + "".join(f"<th>{esc(m)}</th>" for _, m in _headers(table)) + "</tr>")
    lines += ["</thead>", "<tbody>"]
    for row in table.rows:
        texts = [cell_text(table.cell(row, c, m), row) for c in table.columns for m in table.metrics]
        attr = ' class="reference"' if row.reference else ""
        lines.append(f"<tr{attr}><th>{esc(row.label)}</th>" + "".join(f"<td>{esc(t)}</td>" for t in texts) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines) + "\n"


def render_json(tables: list[Table]) -> str:
    return json.dumps(cell_dicts(tables), indent=1) + "\n"


# A text cell a spreadsheet would run as a formula (OWASP "CSV injection"); a number is no risk.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A CSV cell: empty for None, numbers as they are, text that a spreadsheet would take for
    a formula prefixed with a single quote (a plain number written as text, e.g. '-1.25', stays)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def render_csv(tables: list[Table]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(f"{v:.{DECIMALS}f}" if k in NUMBERS and v is not None else v)
                      for k, v in d.items()} for d in cell_dicts(tables))
    return buffer.getvalue()


def _per_table(render_one):
    return lambda tables: "\n".join(render_one(table) for table in tables)


# format -> the whole text of a list of tables
RENDERERS = {"md": _per_table(render_md), "csv": render_csv, "latex": _per_table(render_latex),
             "html": _per_table(render_html), "json": render_json}
FORMATS = tuple(RENDERERS)


def render(tables: Table | list[Table], fmt: str) -> str:
    """All tables in one text: classification first, blank line between tables."""
    if fmt not in RENDERERS:
        raise ConfigError(f"unknown leaderboard format {fmt!r}; valid: {', '.join(FORMATS)}")
    return RENDERERS[fmt]([tables] if isinstance(tables, Table) else list(tables))
