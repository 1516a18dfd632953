"""Layer 7, ``report``: what a result cube says, in numbers, figures and Markdown.

- ``analysis``: the estimators read from a cube (ratios, holding rates with intervals, the t a
  bound used, squeezing the grid); the functions ``testing`` and the report share.
- ``scaling``: width thresholds and power-law fits with intervals (binomial, bootstrap), claims.
- ``plots``: the figures of the bound section and the drawing helpers every section uses.
- ``format``: the reports' one number format.
- ``document``: ``write_report(store, out)``, the driver that writes ``report.md`` and the PNGs.
- one module (or folder) per report section, numbers and figures side by side:
  ``asymptotics_section`` (the deterministic equivalent beside the measurement),
  ``scaling_section`` (the scaling claims table), ``training/`` (numbers, figures, section),
  ``ladder_section`` (the ladder's fits, headline figure and claims from ``ladder.json``).

Rule: reads cubes; imports ``theory``, ``montecarlo`` and, of ``study``, only the cube format
(``study.store``) and the study file parser (``study.spec``), never the driver (``run``, ``tasks``,
``plan``, ``cluster``). Nothing below imports this folder.
"""

from .document import ReportError, write_report

__all__ = ["ReportError", "write_report"]
