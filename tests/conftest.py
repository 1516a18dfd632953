"""Shared fixtures: the ``xp`` fixture runs a test on NumPy and, where available, on CuPy."""

import numpy as np
import pytest

from rmt_engine._backend import gpu_available


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
