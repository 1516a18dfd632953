// Host harness for tests/test_kernels.py: the __host__ __device__ math of philox.cuh and
// activations.cuh compiled for the CPU (nvcc -x cu host_check.cu -o host_check), driven by
// stdin so that one process answers a whole test. Not a GPU kernel; never loaded by CuPy.
//
// Input: one command per line (numbers in hex, doubles as their 64-bit patterns):
//   P k0 k1 c0 c1 c2 c3                        -> "w0 w1 w2 w3" Philox4x32-10 words
//   B w0 w1 w2 w3                              -> "z0 z1" Box-Muller normals (bit patterns)
//   N k0 k1 row_start row_stop ncols scale     -> row-major normal_rows block, one value a line
//   A act deriv x                              -> phi^(deriv)(x) of activation id `act`
// Output: one line per result, lowercase hex without 0x.
#include <stdio.h>
#include <string.h>

#include "activations.cuh"
#include "philox.cuh"

static double bits_to_double(unsigned long long b) {
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static unsigned long long double_to_bits(double d) {
    unsigned long long b;
    memcpy(&b, &d, sizeof b);
    return b;
}

int main(void) {
    char cmd[4];
    while (scanf("%3s", cmd) == 1) {
        if (strcmp(cmd, "P") == 0) {
            unsigned int k0, k1, c0, c1, c2, c3;
            if (scanf("%x %x %x %x %x %x", &k0, &k1, &c0, &c1, &c2, &c3) != 6) return 2;
            rmt_philox4 w = rmt_philox4x32_10(c0, c1, c2, c3, k0, k1);
            printf("%08x %08x %08x %08x\n", w.v[0], w.v[1], w.v[2], w.v[3]);
        } else if (strcmp(cmd, "B") == 0) {
            unsigned int w0, w1, w2, w3;
            if (scanf("%x %x %x %x", &w0, &w1, &w2, &w3) != 4) return 2;
            double z0, z1;
            rmt_box_muller(w0, w1, w2, w3, &z0, &z1);
            printf("%016llx %016llx\n", double_to_bits(z0), double_to_bits(z1));
        } else if (strcmp(cmd, "N") == 0) {
            unsigned int k0, k1;
            unsigned long long r0, r1, ncols, sbits;
            if (scanf("%x %x %llx %llx %llx %llx", &k0, &k1, &r0, &r1, &ncols, &sbits) != 6) return 2;
            const double scale = bits_to_double(sbits);
            for (unsigned long long i = r0; i < r1; ++i) {
                for (unsigned long long k = 0; 2 * k < ncols; ++k) {
                    double z0, z1;
                    rmt_normal_pair(i, k, k0, k1, &z0, &z1);
                    printf("%016llx\n", double_to_bits(z0 * scale));
                    if (2 * k + 1 < ncols) printf("%016llx\n", double_to_bits(z1 * scale));
                }
            }
        } else if (strcmp(cmd, "A") == 0) {
            int act, deriv;
            unsigned long long xbits;
            if (scanf("%x %x %llx", &act, &deriv, &xbits) != 3) return 2;
            printf("%016llx\n", double_to_bits(rmt_activation(act, deriv, bits_to_double(xbits))));
        } else {
            fprintf(stderr, "host_check: unknown command %s\n", cmd);
            return 2;
        }
    }
    return 0;
}
