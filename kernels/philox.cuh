// Philox4x32-10 and the Box-Muller transform, as __host__ __device__ inline functions.
//
// This is the GPU twin of rmt_engine/rng.py (the reference); the two must agree:
//   * Philox words bit for bit (Random123 known-answer vectors, tests/test_kernels.py),
//   * normals to a few ulp (log/sqrt/cos/sin are libm on the host, CUDA's on the device).
// Counter layout (the contract, see rng.py): element (i, j) of a matrix with ncols columns
// comes from the Philox block with counter (j / 2, i mod 2^32, i >> 32, 0) under the 2-word
// key; the block's words (w0, w1, w2, w3) give
//   u1 = (((w0 << 32 | w1) >> 11) + 1) * 2^-53   in (0, 1]
//   u2 = ((w2 << 32 | w3) >> 11) * 2^-53         in [0, 1)
//   r = sqrt(-2 log u1), theta = (2 pi) * u2 (rounded to double first, as NumPy does),
//   column 2k gets r cos(theta), column 2k + 1 gets r sin(theta).
//
// Rules of this header: no standard-library includes when compiled by NVRTC (CuPy's default
// compiler has none; the math functions are built in); no FMA-contractible expression (there
// is no a * b + c anywhere below), so -fmad does not change a bit; usable from plain C++ too.
#pragma once

#include "rmt_compat.cuh"

typedef unsigned int rmt_u32;
typedef unsigned long long rmt_u64;

#define RMT_PHILOX_M0 0xD2511F53u
#define RMT_PHILOX_M1 0xCD9E8D57u
#define RMT_PHILOX_W0 0x9E3779B9u
#define RMT_PHILOX_W1 0xBB67AE85u
#define RMT_PHILOX_ROUNDS 10

// 2^-53 and the double nearest 2 pi (== 2.0 * np.pi exactly: doubling is exact).
#define RMT_TWO_POW_M53 1.1102230246251565404236316680908203125e-16
#define RMT_TWO_PI 6.283185307179586476925286766559005768

struct rmt_philox4 {
    rmt_u32 v[4];
};

// High and low 32-bit halves of the 64-bit product a * b.
__host__ __device__ __forceinline__ void rmt_mulhilo32(rmt_u32 a, rmt_u32 b, rmt_u32* hi, rmt_u32* lo) {
#if defined(__CUDA_ARCH__)
    *hi = __umulhi(a, b);
    *lo = a * b;
#else
    rmt_u64 p = (rmt_u64)a * (rmt_u64)b;
    *hi = (rmt_u32)(p >> 32);
    *lo = (rmt_u32)p;
#endif
}

// One Philox4x32 round (Random123's philox4x32round).
__host__ __device__ __forceinline__ void rmt_philox_round(rmt_u32 c[4], rmt_u32 k0, rmt_u32 k1) {
    rmt_u32 hi0, lo0, hi1, lo1;
    rmt_mulhilo32(RMT_PHILOX_M0, c[0], &hi0, &lo0);
    rmt_mulhilo32(RMT_PHILOX_M1, c[2], &hi1, &lo1);
    rmt_u32 n0 = hi1 ^ c[1] ^ k0;
    rmt_u32 n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

// Philox4x32-10 of the counter (c0, c1, c2, c3) under the key (k0, k1).
__host__ __device__ __forceinline__ rmt_philox4 rmt_philox4x32_10(rmt_u32 c0, rmt_u32 c1, rmt_u32 c2, rmt_u32 c3,
                                                                  rmt_u32 k0, rmt_u32 k1) {
    rmt_u32 c[4] = {c0, c1, c2, c3};
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int r = 0; r < RMT_PHILOX_ROUNDS; ++r) {
        if (r > 0) {
            k0 += RMT_PHILOX_W0;
            k1 += RMT_PHILOX_W1;
        }
        rmt_philox_round(c, k0, k1);
    }
    rmt_philox4 out;
    out.v[0] = c[0];
    out.v[1] = c[1];
    out.v[2] = c[2];
    out.v[3] = c[3];
    return out;
}

// Two standard normals (*z0 = r cos theta, *z1 = r sin theta) from one block of four words.
__host__ __device__ __forceinline__ void rmt_box_muller(rmt_u32 w0, rmt_u32 w1, rmt_u32 w2, rmt_u32 w3,
                                                        double* z0, double* z1) {
    rmt_u64 hi = ((rmt_u64)w0 << 32) | (rmt_u64)w1;
    rmt_u64 lo = ((rmt_u64)w2 << 32) | (rmt_u64)w3;
    // both integers are < 2^53: the conversions and the scalings by 2^-53 are exact
    double u1 = (double)((hi >> 11) + 1ull) * RMT_TWO_POW_M53;
    double u2 = (double)(lo >> 11) * RMT_TWO_POW_M53;
    double r = sqrt(-2.0 * log(u1));
    double theta = RMT_TWO_PI * u2;
    *z0 = r * cos(theta);
    *z1 = r * sin(theta);
}

// The Philox block of element (row, 2k or 2k + 1) of a matrix under the key (k0, k1).
__host__ __device__ __forceinline__ rmt_philox4 rmt_philox_pair(rmt_u64 row, rmt_u64 pair, rmt_u32 k0, rmt_u32 k1) {
    return rmt_philox4x32_10((rmt_u32)pair, (rmt_u32)(row & 0xFFFFFFFFull), (rmt_u32)(row >> 32), 0u, k0, k1);
}

// Elements (row, 2 pair) and (row, 2 pair + 1) of the standard-normal matrix of the key.
__host__ __device__ __forceinline__ void rmt_normal_pair(rmt_u64 row, rmt_u64 pair, rmt_u32 k0, rmt_u32 k1,
                                                         double* z0, double* z1) {
    rmt_philox4 w = rmt_philox_pair(row, pair, k0, k1);
    rmt_box_muller(w.v[0], w.v[1], w.v[2], w.v[3], z0, z1);
}
