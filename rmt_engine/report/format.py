"""How the Markdown reports print a number and a table: ``digits`` significant digits, ``nan``/``inf`` spelled out,
anything that is not a number as its ``str``; tables list only what differs: rows identical across the
values of a grid axis are one row (``collapse_rows``, ``markdown_table``). One rule for every report section."""

from __future__ import annotations

import numpy as np


def fmt(x, digits: int = 3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}g}"


def _level_words(cells, levels) -> str:
    """The cell that stands for several values of one axis: ``"all 8 values"`` or ``"0.5, 1, 2"``."""
    if levels is not None and len(levels) > 1 and sorted(cells) == sorted(levels):
        return f"all {len(levels)} values"
    return ", ".join(cells)


def collapse_rows(rows, n_index: int, levels=None):
    """Merge table rows that differ in one index column only and agree in every value column.

    ``rows``: lists of cells (strings), the first ``n_index`` of which label the row (the grid axes
    that vary), the rest its values. For each index column in turn, rows equal in every other cell
    are merged into one whose cell lists the merged labels, or reads ``"all K values"`` when they
    are every value of the axis (``levels[j]``: the axis' values as cells; ``None``: not known).
    Nothing that differs is lost: two rows are merged only when all their values are identical.
    """
    rows = [list(r) for r in rows]
    for j in range(n_index):
        groups: dict = {}
        for r in rows:
            key = tuple(r[:j] + r[j + 1:])
            groups.setdefault(key, []).append(r[j])
        out = []
        for key, cells in groups.items():
            lev = None if levels is None else levels[j]
            out.append(list(key[:j]) + [_level_words(cells, lev) if len(cells) > 1 else cells[0]] + list(key[j:]))
        rows = out
    return rows


def markdown_table(index, columns, rows, levels=None) -> list[str]:
    """Markdown lines of a table whose rows are collapsed (``collapse_rows``); an index column that
    reads ``"all K values"`` in every row is left out and said once under the table.

    ``index``: the names of the row-labelling columns (grid axes), ``columns`` the value columns,
    ``rows``: lists of cells (index cells first). ``levels``: per index column, its values as cells.
    """
    rows = collapse_rows(rows, len(index), levels)
    keep = [j for j in range(len(index))
            if not (len(rows) and levels is not None and len(levels[j]) > 1
                    and all(r[j] == f"all {len(levels[j])} values" for r in rows))]
    gone = [j for j in range(len(index)) if j not in keep]
    head = [index[j] for j in keep] + list(columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r[j] for j in keep] + r[len(index):]) + " |")
    if gone:
        lines += ["", "Identical for every value of " + ", ".join(f"{index[j]} ({len(levels[j])} values)" for j in gone)
                  + ": one row stands for all of them."]
    return lines
