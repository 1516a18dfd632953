// Activations phi, phi', phi'' as __host__ __device__ functions, selected by an integer id.
//
// GPU twin of rmt_engine/activations.py (the reference). The formulas below are the reference's,
// operation for operation, so that host-compiled and device-compiled values agree with NumPy /
// SciPy to the accuracy of the elementary functions (erf, erfc, exp, log1p, tanh: ~1 ulp each):
//   gelu      x Phi(x) (EXACT Gaussian CDF, not the tanh approximation); Phi is scipy's ndtr
//             (cephes): 0.5 + 0.5 erf(x/sqrt2) for |x/sqrt2| < 1/sqrt2, else 0.5 erfc(|x|/sqrt2)
//             (reflected for x > 0), accurate in the left tail.
//             phi' = Phi(x) + x e^{-x^2/2} / sqrt(2 pi), phi'' = (2 - x^2) e^{-x^2/2} / sqrt(2 pi)
//   tanh      tanh x; phi' = sech^2 x = 4 e / (1 + e)^2 with e = e^{-2|x|}; phi'' = -2 tanh(x) sech^2 x
//   sigmoid   s(x) = 1 / (1 + e^{-x}) (scipy's expit); phi' = s(x) s(-x); phi'' = -s(x) s(-x) tanh(x/2)
//   softplus  max(x, 0) + log1p(e^{-|x|}) (no overflow); phi' = s(x); phi'' = s(x) s(-x)
//   erf       erf x; phi' = 2/sqrt(pi) e^{-x^2}; phi'' = -2 (2/sqrt(pi)) x e^{-x^2}
//
// The id table (RMT_ACT_*) is mirrored by rmt_engine.gpu.ACTIVATION_IDS (a test parses this file).
// Products that feed an addition use RMT_DMUL, which is __dmul_rn on the device so that nvcc's
// default FMA contraction cannot fuse them: the device then rounds exactly as NumPy does.
#pragma once

#include "rmt_compat.cuh"

// ---- id table (never renumber without changing rmt_engine/gpu.py::ACTIVATION_IDS) ----
#define RMT_ACT_GELU 0
#define RMT_ACT_TANH 1
#define RMT_ACT_SIGMOID 2
#define RMT_ACT_SOFTPLUS 3
#define RMT_ACT_ERF 4
#define RMT_ACT_COUNT 5

#if defined(__CUDA_ARCH__)
#define RMT_DMUL(a, b) __dmul_rn((a), (b))
#else
#define RMT_DMUL(a, b) ((a) * (b))
#endif

#define RMT_SQRT1_2 0.7071067811865476  // M_SQRT1_2, as in scipy's ndtr
// The reference computes these in double arithmetic; the literals are those doubles exactly
// (sqrt(2 pi) rounded this way is 1 ulp below the correctly rounded value 2.5066282746310007).
#define RMT_SQRT2PI 2.5066282746310002  // math.sqrt(2.0 * math.pi)
#define RMT_TWO_OVER_SQRTPI 1.1283791670955126  // 2.0 / math.sqrt(math.pi)

// Gaussian CDF, scipy.special.ndtr's algorithm (cephes ndtr.c).
__host__ __device__ __forceinline__ double rmt_ndtr(double a) {
    double x = a * RMT_SQRT1_2;
    double z = fabs(x);
    if (z < RMT_SQRT1_2) return 0.5 + 0.5 * erf(x);  // 0.5 * erf is exact: contraction is harmless
    double y = 0.5 * erfc(z);
    return x > 0.0 ? 1.0 - y : y;
}

// scipy.special.expit: 1 / (1 + exp(-x)).
__host__ __device__ __forceinline__ double rmt_expit(double x) { return 1.0 / (1.0 + exp(-x)); }

// sech^2 x = 4 e^{-2|x|} / (1 + e^{-2|x|})^2.
__host__ __device__ __forceinline__ double rmt_sech2(double x) {
    double e = exp(-2.0 * fabs(x));
    return 4.0 * e / ((1.0 + e) * (1.0 + e));
}

// ---- gelu ----
__host__ __device__ __forceinline__ double rmt_gelu(double x) { return x * rmt_ndtr(x); }
__host__ __device__ __forceinline__ double rmt_gelu_d(double x) {
    return rmt_ndtr(x) + x * exp(-0.5 * x * x) / RMT_SQRT2PI;
}
__host__ __device__ __forceinline__ double rmt_gelu_dd(double x) {
    return (2.0 - RMT_DMUL(x, x)) * exp(-0.5 * x * x) / RMT_SQRT2PI;
}

// ---- tanh ----
__host__ __device__ __forceinline__ double rmt_tanh(double x) { return tanh(x); }
__host__ __device__ __forceinline__ double rmt_tanh_d(double x) { return rmt_sech2(x); }
__host__ __device__ __forceinline__ double rmt_tanh_dd(double x) { return -2.0 * tanh(x) * rmt_sech2(x); }

// ---- sigmoid ----
__host__ __device__ __forceinline__ double rmt_sigmoid(double x) { return rmt_expit(x); }
__host__ __device__ __forceinline__ double rmt_sigmoid_d(double x) { return rmt_expit(x) * rmt_expit(-x); }
__host__ __device__ __forceinline__ double rmt_sigmoid_dd(double x) {
    return -rmt_expit(x) * rmt_expit(-x) * tanh(0.5 * x);
}

// ---- softplus ----
__host__ __device__ __forceinline__ double rmt_softplus(double x) {
    return fmax(x, 0.0) + log1p(exp(-fabs(x)));
}
__host__ __device__ __forceinline__ double rmt_softplus_d(double x) { return rmt_expit(x); }
__host__ __device__ __forceinline__ double rmt_softplus_dd(double x) { return rmt_expit(x) * rmt_expit(-x); }

// ---- erf ----
__host__ __device__ __forceinline__ double rmt_erf(double x) { return erf(x); }
__host__ __device__ __forceinline__ double rmt_erf_d(double x) { return RMT_TWO_OVER_SQRTPI * exp(-x * x); }
__host__ __device__ __forceinline__ double rmt_erf_dd(double x) {
    return -2.0 * RMT_TWO_OVER_SQRTPI * x * exp(-x * x);
}

// phi^(deriv)(x) of activation `act` (deriv in 0, 1, 2); NaN for an unknown id or order.
__host__ __device__ __forceinline__ double rmt_activation(int act, int deriv, double x) {
    if (deriv < 0 || deriv > 2) return nan("");
    switch (act * 3 + deriv) {
        case RMT_ACT_GELU * 3 + 0: return rmt_gelu(x);
        case RMT_ACT_GELU * 3 + 1: return rmt_gelu_d(x);
        case RMT_ACT_GELU * 3 + 2: return rmt_gelu_dd(x);
        case RMT_ACT_TANH * 3 + 0: return rmt_tanh(x);
        case RMT_ACT_TANH * 3 + 1: return rmt_tanh_d(x);
        case RMT_ACT_TANH * 3 + 2: return rmt_tanh_dd(x);
        case RMT_ACT_SIGMOID * 3 + 0: return rmt_sigmoid(x);
        case RMT_ACT_SIGMOID * 3 + 1: return rmt_sigmoid_d(x);
        case RMT_ACT_SIGMOID * 3 + 2: return rmt_sigmoid_dd(x);
        case RMT_ACT_SOFTPLUS * 3 + 0: return rmt_softplus(x);
        case RMT_ACT_SOFTPLUS * 3 + 1: return rmt_softplus_d(x);
        case RMT_ACT_SOFTPLUS * 3 + 2: return rmt_softplus_dd(x);
        case RMT_ACT_ERF * 3 + 0: return rmt_erf(x);
        case RMT_ACT_ERF * 3 + 1: return rmt_erf_d(x);
        case RMT_ACT_ERF * 3 + 2: return rmt_erf_dd(x);
        default: return nan("");  // unknown id or derivative order
    }
}
