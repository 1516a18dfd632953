"""Shared fixtures: the ``xp`` fixture runs a test on NumPy and, where available, on CuPy."""

import numpy as np
import pytest
from hypothesis import settings

from rmt_engine.backend.xp import gpu_available

# Property tests draw the same examples on every run (CI must not pass or fail by chance);
# `pytest --hypothesis-profile=explore` draws fresh ones when hunting for counterexamples.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile("default")


def _xp_params():
    params = [pytest.param(np, id="numpy")]
    marks = [pytest.mark.gpu]
    if not gpu_available():
        marks.append(pytest.mark.skip(reason="CuPy or a CUDA device is not available"))
    params.append(pytest.param("cupy", id="cupy", marks=marks))
    return params


@pytest.fixture(params=_xp_params())
def xp(request):
    if request.param == "cupy":
        import cupy

        return cupy
    return request.param
