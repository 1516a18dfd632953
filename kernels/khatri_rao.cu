// The Khatri-Rao power X^{*t} (Eq. 20, 53-55) and the Hadamard power G^{o t}, elementwise.
//
//   rmt_khatri_rao(X, out, d0, n, t, rows)   out (rows = d0^t) x n row-major from X (d0 x n,
//       row-major): out[r, a] = X[i_1, a] * X[i_2, a] * ... * X[i_t, a] with
//       r = i_1 d0^{t-1} + ... + i_t (the row order of np.kron(x_a, x_a, ...)); the product is
//       taken left to right, ((x[i_1] x[i_2]) x[i_3]) ..., like rmt_engine.khatri_rao.khatri_rao
//       and functools.reduce(np.kron, [x_a] * t), so the two agree bit for bit. t = 0 gives ones.
//   rmt_hadamard_power(G, out, n, t)   out[i] = G[i]^t (out may be G): t = 0 -> 1, t = 1 -> copy,
//       t = 2 -> G * G (bitwise NumPy's G**2), t >= 3 -> pow(G, t) (NumPy's G**t calls libm pow;
//       CUDA's pow is within 2 ulp of it).
// One thread per output element, grid-stride loops, 64-bit indices; consecutive threads walk
// along a row (column index a), so reads of X and writes of out are coalesced.

extern "C" __global__ void rmt_khatri_rao(const double* __restrict__ X, double* __restrict__ out, long long d0,
                                          long long n, int t, long long rows) {
    const long long total = rows * n;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const long long r = e / n;
        const long long a = e - r * n;
        if (t == 0) {
            out[e] = 1.0;
            continue;
        }
        // leading index first: i_1 = r / d0^{t-1}
        long long div = rows / d0;  // d0^{t-1}
        long long rem = r;
        const long long i1 = rem / div;
        rem -= i1 * div;
        double p = X[i1 * n + a];
        for (int k = 1; k < t; ++k) {
            div /= d0;
            const long long ik = rem / div;
            rem -= ik * div;
            p = p * X[ik * n + a];
        }
        out[e] = p;
    }
}

extern "C" __global__ void rmt_hadamard_power(const double* G, double* out, long long n, int t) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double g = G[i];
        double v;
        if (t == 0) v = 1.0;
        else if (t == 1) v = g;
        else if (t == 2) v = g * g;
        else v = pow(g, (double)t);
        out[i] = v;
    }
}
