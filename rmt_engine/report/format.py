"""How the Markdown reports print a number: ``digits`` significant digits, ``nan``/``inf`` spelled out,
anything that is not a number as its ``str``. One rule for report.py, train_report.py and scaling_report.py."""

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
