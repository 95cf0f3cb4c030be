/* One-pass weighted sum of K tensors, accumulated in float64 (fusion/native.py).
 *
 *     out[j] = round_to_output_dtype( sum_k w_k * (double) x_k[j] )
 *
 * The sum runs in the order k = 0, 1, ..., K-1: acc = w_0 x_0, then
 * acc = w_k x_k + acc, with a fused multiply-add where the CPU has one (as
 * torch's vectorised add with alpha does). For K <= 4 each element is summed
 * in registers in a single pass: every input read once and the output written
 * once, as fast as a copy. Larger K fold four inputs per pass into a float64
 * accumulator small enough for the L1 cache. Returns 1 when any output element
 * is NaN or +-Inf (the caller then names the offending entry), else 0.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define CHUNK 512

#ifdef __FMA__
#define MADD(w, x, acc) fma((w), (x), (acc))
#else
#define MADD(w, x, acc) ((acc) + (w) * (x))
#endif

/* Sums over the inputs x[0..3] with weights w[0..3] at element j. */
#define SUM1 (w[0] * (double)x[0][j])
#define SUM2 MADD(w[1], (double)x[1][j], SUM1)
#define SUM3 MADD(w[2], (double)x[2][j], SUM2)
#define SUM4 MADD(w[3], (double)x[3][j], SUM3)
/* The same on top of an accumulator. */
#define FOLD1(acc) MADD(w[0], (double)x[0][j], (acc))
#define FOLD2(acc) MADD(w[1], (double)x[1][j], FOLD1(acc))
#define FOLD3(acc) MADD(w[2], (double)x[2][j], FOLD2(acc))
#define FOLD4(acc) MADD(w[3], (double)x[3][j], FOLD3(acc))

/* Round to the output type, store at dst[j], and note a NaN/Inf (all exponent bits set). */
#define STORE(TYPE, BITS, EXPONENT, dst, expression)                                      \
    do {                                                                                  \
        const TYPE value_ = (TYPE)(expression);                                           \
        BITS bits_;                                                                       \
        memcpy(&bits_, &value_, sizeof bits_);                                            \
        (dst)[j] = value_;                                                                \
        nonfinite |= (BITS)((bits_ & (EXPONENT)) == (EXPONENT));                          \
    } while (0)

#define LOOP(n, TYPE, BITS, EXPONENT, dst, expression)                                    \
    for (int64_t j = 0; j < (n); ++j)                                                     \
        STORE(TYPE, BITS, EXPONENT, dst, expression)

#define WEIGHTED_SUM(NAME, TYPE, BITS, EXPONENT)                                          \
    static BITS NAME##_many(const TYPE *const *inputs, const double *weights,             \
                            int64_t count, TYPE *restrict out, int64_t size)              \
    {                                                                                     \
        double acc[CHUNK];                                                                \
        BITS nonfinite = 0;                                                               \
        for (int64_t start = 0; start < size; start += CHUNK) {                           \
            const int64_t n = size - start < CHUNK ? size - start : CHUNK;                \
            const TYPE *x[4];                                                             \
            const double *w = weights;                                                    \
            int64_t k = 0;                                                                \
            for (int i = 0; i < 4; ++i)                                                   \
                x[i] = inputs[i] + start;                                                 \
            for (int64_t j = 0; j < n; ++j)                                               \
                acc[j] = SUM4;                                                            \
            for (k = 4; count - k > 4; k += 4) {                                          \
                w = weights + k;                                                          \
                for (int i = 0; i < 4; ++i)                                               \
                    x[i] = inputs[k + i] + start;                                         \
                for (int64_t j = 0; j < n; ++j)                                           \
                    acc[j] = FOLD4(acc[j]);                                               \
            }                                                                             \
            /* the last one to four inputs, fused with the store */                       \
            w = weights + k;                                                              \
            for (int i = 0; i < count - k; ++i)                                           \
                x[i] = inputs[k + i] + start;                                             \
            TYPE *restrict o = out + start;                                               \
            switch (count - k) {                                                          \
            case 1: LOOP(n, TYPE, BITS, EXPONENT, o, FOLD1(acc[j])); break;               \
            case 2: LOOP(n, TYPE, BITS, EXPONENT, o, FOLD2(acc[j])); break;               \
            case 3: LOOP(n, TYPE, BITS, EXPONENT, o, FOLD3(acc[j])); break;               \
            default: LOOP(n, TYPE, BITS, EXPONENT, o, FOLD4(acc[j])); break;              \
            }                                                                             \
        }                                                                                 \
        return nonfinite;                                                                 \
    }                                                                                     \
                                                                                          \
    int NAME(const TYPE *const *inputs, const double *weights, int64_t count,            \
             TYPE *restrict out, int64_t size)                                            \
    {                                                                                     \
        const TYPE *restrict x[4] = {inputs[0], count > 1 ? inputs[1] : 0,                \
                                     count > 2 ? inputs[2] : 0, count > 3 ? inputs[3] : 0}; \
        const double *w = weights;                                                        \
        BITS nonfinite = 0;                                                               \
        switch (count) {                                                                  \
        case 1: LOOP(size, TYPE, BITS, EXPONENT, out, SUM1); break;                       \
        case 2: LOOP(size, TYPE, BITS, EXPONENT, out, SUM2); break;                       \
        case 3: LOOP(size, TYPE, BITS, EXPONENT, out, SUM3); break;                       \
        case 4: LOOP(size, TYPE, BITS, EXPONENT, out, SUM4); break;                       \
        default: nonfinite = NAME##_many(inputs, weights, count, out, size); break;       \
        }                                                                                 \
        return nonfinite != 0;                                                            \
    }

WEIGHTED_SUM(mtda_weighted_sum_f32, float, uint32_t, UINT32_C(0x7f800000))
WEIGHTED_SUM(mtda_weighted_sum_f64, double, uint64_t, UINT64_C(0x7ff0000000000000))
