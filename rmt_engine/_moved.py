"""Old module paths of the flat layout (before 0.2) keep importing, with a ``DeprecationWarning``.

Rule of this module: ``MOVED`` maps every module that left the top level of ``rmt_engine`` to its
new home; ``import rmt_engine.trial`` (or ``from rmt_engine.trial import run_trial``) warns, naming
the new path, and binds the *same* module object as ``rmt_engine.montecarlo.trial`` (so a
``monkeypatch`` through the old path patches the real module). Nothing else of the engine imports
an old path. ``rmt_engine.report`` and ``rmt_engine.study`` kept their names (they are the
packages now and re-export what the single modules had).

Why aliases and not only a changelog: researchers' scripts and saved notebooks import the deep
modules (``rmt_engine.analysis``, ``rmt_engine.store``, ...); a warning that names the new path
lets them move at their pace. The aliases will be removed in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module -> new module (each old ``rmt_engine/<name>.py`` of the flat layout)
MOVED = {f"rmt_engine.{old}": f"rmt_engine.{new}" for old, new in {
    "_backend": "backend.xp", "_cuda": "backend.cuda", "gpu": "backend.kernels",
    "_blas": "linalg.blas", "spectra": "linalg.spectra", "extremes": "linalg.extremes",
    "rng": "sampling.rng", "data": "sampling.data",
    "activations": "theory.activations", "hermite": "theory.hermite", "expected": "theory.expected",
    "khatri_rao": "theory.khatri_rao", "hadamard": "theory.hadamard", "orders": "theory.orders",
    "bounds": "theory.bounds", "asymptotics": "theory.asymptotics",
    "spec": "montecarlo.spec", "fields": "montecarlo.fields", "gram": "montecarlo.gram",
    "point_cache": "montecarlo.point_cache", "trial": "montecarlo.trial", "train": "montecarlo.train",
    "store": "study.store", "cluster": "study.cluster", "provenance": "study.provenance",
    "resources": "study.resources",
    "analysis": "report.analysis", "scaling": "report.scaling", "plots": "report.plots",
    "_format": "report.format", "asymptotics_report": "report.asymptotics_section",
    "scaling_report": "report.scaling_section", "train_report": "report.training.numbers",
    "train_plots": "report.training.figures", "train_section": "report.training.section",
}.items()}


class _MovedModuleLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module):
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; import it from there "
                      f"(the old path will be removed in rmt_engine 0.3)", DeprecationWarning, stacklevel=2)
        # the import system returns whatever sys.modules holds after exec_module
        sys.modules[module.__name__] = importlib.import_module(new)


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, _MovedModuleLoader())
        return None


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (called by ``rmt_engine/__init__``)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
