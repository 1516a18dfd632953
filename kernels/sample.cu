// Counter-based Gaussian sampling on the GPU: rows [row_start, row_stop) x ncols of the
// standard-normal matrix of a Philox key, times `scale`, written row-major (float64) straight
// into device memory. Same numbers as rmt_engine.rng.normal_rows (to a few ulp: CUDA's log,
// cos, sin vs libm) and the same Philox words bit for bit (philox.cuh).
//
// Kernels (all extern "C", launched by rmt_engine/gpu.py with a grid-stride loop, 64-bit indices):
//   rmt_normal_rows   one thread per (row, column pair): one Philox block -> two normals
//   rmt_philox_words  raw Philox4x32-10 words of given counters (for bitwise tests)
//   rmt_box_muller    Box-Muller of given word blocks (for tests of the transform alone)
#include "philox.cuh"

// out: nrows x ncols row-major (the block's first row is matrix row `row_start`).
extern "C" __global__ void rmt_normal_rows(double* __restrict__ out, unsigned int k0, unsigned int k1,
                                           unsigned long long row_start, long long nrows, long long ncols,
                                           double scale) {
    const long long npairs = (ncols + 1) / 2;
    const long long total = nrows * npairs;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const long long i = t / npairs;       // row within the block
        const long long k = t - i * npairs;   // column pair
        double z0, z1;
        rmt_normal_pair(row_start + (rmt_u64)i, (rmt_u64)k, k0, k1, &z0, &z1);
        double* row = out + i * ncols;
        const long long j = 2 * k;
        row[j] = z0 * scale;  // scale == 1 multiplies exactly, like NumPy's skipped multiply
        if (j + 1 < ncols) row[j + 1] = z1 * scale;
    }
}

// counters: n x 4 uint32 (row-major); words: n x 4 uint32.
extern "C" __global__ void rmt_philox_words(const unsigned int* __restrict__ counters, unsigned int* __restrict__ words,
                                            long long n, unsigned int k0, unsigned int k1) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride) {
        const unsigned int* c = counters + 4 * t;
        rmt_philox4 w = rmt_philox4x32_10(c[0], c[1], c[2], c[3], k0, k1);
        unsigned int* o = words + 4 * t;
        o[0] = w.v[0];
        o[1] = w.v[1];
        o[2] = w.v[2];
        o[3] = w.v[3];
    }
}

// words: n x 4 uint32; out: n x 2 float64 (r cos theta, r sin theta).
extern "C" __global__ void rmt_box_muller(const unsigned int* __restrict__ words, double* __restrict__ out,
                                          long long n) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride) {
        const unsigned int* w = words + 4 * t;
        rmt_box_muller(w[0], w[1], w[2], w[3], out + 2 * t, out + 2 * t + 1);
    }
}
