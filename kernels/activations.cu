// Elementwise activation kernels on a float64 block (typically the GEMM output W0_b X, so that
// F_b = phi(W0_b X) is formed in place without another n x rows temporary).
//
//   rmt_activation_inplace(x, n, act, deriv)      x[i] <- phi^(deriv)(x[i])
//   rmt_activation_all(x, d1, d2, n, act)         x[i] <- phi(x[i]); d1[i] <- phi'(x_old[i]) and
//                                                 d2[i] <- phi''(x_old[i]) where d1 / d2 are not null
// `act` is an id of activations.cuh (RMT_ACT_*); an unknown id or order writes NaN.
#include "activations.cuh"

extern "C" __global__ void rmt_activation_inplace(double* __restrict__ x, long long n, int act, int deriv) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        x[i] = rmt_activation(act, deriv, x[i]);
    }
}

extern "C" __global__ void rmt_activation_all(double* __restrict__ x, double* __restrict__ d1,
                                              double* __restrict__ d2, long long n, int act) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double v = x[i];
        if (d1 != 0) d1[i] = rmt_activation(act, 1, v);
        if (d2 != 0) d2[i] = rmt_activation(act, 2, v);
        x[i] = rmt_activation(act, 0, v);
    }
}
