"""Counter-based Gaussian sampling: Philox4x32-10 + Box-Muller, addressable element by element.

Why write the generator: numpy's Philox is the 4x64 variant and CuPy's stream layout depends on
the GPU, so neither can regenerate one row block of W0 alone, identically on CPU and GPU. This
module is the reference; ``kernels/philox.cuh`` implements the same arithmetic for the GPU.

Layout (the contract shared with the CUDA kernel)
- Key: two 32-bit words from ``SeedSequence(seed, spawn_key=(stream_id, trial))`` (``trial`` is
  omitted for the data streams, which do not change from trial to trial).
- Element (i, j) of a matrix with ``ncols`` columns comes from the Philox block with counter
  ``(j // 2, i mod 2**32, i // 2**32, 0)``; the block's words (w0, w1, w2, w3) give
  ``u1 = ((w0 << 32 | w1) >> 11) + 1) * 2**-53`` in (0, 1] and ``u2 = ((w2 << 32 | w3) >> 11) * 2**-53``
  in [0, 1); ``r = sqrt(-2 log u1)``; column ``2k`` gets ``r cos(2 pi u2)``, column ``2k + 1`` gets
  ``r sin(2 pi u2)``. Every element depends only on (key, i, j): any row block of any matrix
  is generated alone, bitwise identical to the same rows of the whole matrix.
- Consequences worth knowing: the same (seed, trial) gives the same W0 rows for every grid point
  that shares d0 (W0 of a larger d1 extends W0 of a smaller one; activations are compared on
  the same weights), and the data X of n columns extends the data of fewer columns.
"""

from __future__ import annotations

import numpy as np

#: Stream identifiers (the first spawn-key word). Never renumber: stored cubes depend on them.
STREAMS = {"W0": 0, "V0": 1, "data": 2, "labels": 3}
#: Streams that are drawn once per grid point, not once per trial.
DATA_STREAMS = ("data", "labels")

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint32(0x9E3779B9)
PHILOX_W1 = np.uint32(0xBB67AE85)
PHILOX_ROUNDS = 10
_TWO_POW_M53 = 2.0**-53
_MASK32 = np.uint64(0xFFFFFFFF)


def stream_key(seed: int, stream: str, trial: int | None = None) -> np.ndarray:
    """Philox key (2 x uint32) of ``stream`` for ``trial`` (``None`` for the data streams)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; expected one of {sorted(STREAMS)}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if stream in DATA_STREAMS:
        if trial is not None:
            raise ValueError(f"stream {stream!r} is fixed per grid point: pass trial=None")
        spawn_key: tuple[int, ...] = (STREAMS[stream],)
    else:
        if trial is None or int(trial) < 0:
            raise ValueError(f"stream {stream!r} needs a non-negative trial index, got {trial!r}")
        spawn_key = (STREAMS[stream], int(trial))
    ss = np.random.SeedSequence(int(seed), spawn_key=spawn_key)
    return ss.generate_state(2, dtype=np.uint32)


def _mulhilo(a: np.ndarray, m: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    prod = a.astype(np.uint64) * m
    return (prod >> np.uint64(32)).astype(np.uint32), (prod & _MASK32).astype(np.uint32)


def philox4x32(counter: np.ndarray, key, rounds: int = PHILOX_ROUNDS) -> np.ndarray:
    """Philox4x32-``rounds`` of ``counter`` (shape ``(..., 4)``, uint32) under ``key`` (2 uint32).

    Matches the Random123 reference (known-answer vectors in the tests).
    """
    ctr = np.asarray(counter, dtype=np.uint32)
    if ctr.shape[-1:] != (4,):
        raise ValueError(f"counter must have a trailing axis of 4 words, got shape {ctr.shape}")
    k0, k1 = (np.uint32(k) for k in np.asarray(key, dtype=np.uint32).reshape(2))
    c0, c1, c2, c3 = (ctr[..., i].copy() for i in range(4))
    with np.errstate(over="ignore"):
        for r in range(rounds):
            if r:
                k0 = np.uint32(k0 + PHILOX_W0)
                k1 = np.uint32(k1 + PHILOX_W1)
            hi0, lo0 = _mulhilo(c0, PHILOX_M0)
            hi1, lo1 = _mulhilo(c2, PHILOX_M1)
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=-1)


def _counters(row_start: int, row_stop: int, npairs: int) -> np.ndarray:
    rows = np.arange(row_start, row_stop, dtype=np.uint64)
    ctr = np.zeros((row_stop - row_start, npairs, 4), dtype=np.uint32)
    ctr[..., 0] = np.arange(npairs, dtype=np.uint32)[None, :]
    ctr[..., 1] = (rows & _MASK32).astype(np.uint32)[:, None]
    ctr[..., 2] = (rows >> np.uint64(32)).astype(np.uint32)[:, None]
    return ctr


def box_muller(words: np.ndarray) -> np.ndarray:
    """Two standard normals from each block of four 32-bit words (shape ``(..., 4)`` -> ``(..., 2)``)."""
    w = words.astype(np.uint64)
    hi = (w[..., 0] << np.uint64(32)) | w[..., 1]
    lo = (w[..., 2] << np.uint64(32)) | w[..., 3]
    u1 = ((hi >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * _TWO_POW_M53
    u2 = (lo >> np.uint64(11)).astype(np.float64) * _TWO_POW_M53
    r = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * np.pi * u2
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)


def normal_rows(key, row_start: int, row_stop: int, ncols: int, scale: float = 1.0) -> np.ndarray:
    """Rows ``row_start:row_stop`` of the ``(?, ncols)`` standard-normal matrix of ``key``, times ``scale``.

    Returns a float64 NumPy array of shape ``(row_stop - row_start, ncols)``. The GPU path
    (``kernels/sample.cu``) writes the same numbers into device memory.
    """
    if not (0 <= row_start <= row_stop):
        raise ValueError(f"need 0 <= row_start <= row_stop, got {row_start}, {row_stop}")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    npairs = (ncols + 1) // 2
    words = philox4x32(_counters(row_start, row_stop, npairs), key)
    z = box_muller(words).reshape(row_stop - row_start, 2 * npairs)[:, :ncols]
    if scale != 1.0:
        z *= scale
    return np.ascontiguousarray(z)


def row_blocks(nrows: int, block_rows: int):
    """Yield ``(start, stop)`` of consecutive row blocks covering ``range(nrows)``."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    for start in range(0, nrows, block_rows):
        yield start, min(start + block_rows, nrows)
