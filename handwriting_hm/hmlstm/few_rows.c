/* y = x w^T for a few rows of x: the products of the HM-LSTM's layers that compute for a few rows.
 *
 * x is (m, k), w is (n, k), y is (m, n), all row-major float32. For m of a few rows the BLAS
 * libraries torch calls on the CPU are slow (on a Zen 3 core a 5-row product with a 1601 x 400
 * weight costs about as much as a 16-row one); here each block of four rows of w is read from
 * memory once, and meets every row of x while it sits in L1: two rows of x at a time against four
 * rows of w, eight AVX2 accumulators of eight floats. Compiled and loaded by few_rows.py.
 */
#include <immintrin.h>
#include <stdint.h>

static inline float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(s);
}

/* y[i][j] = x[i] . w[j] for i < rows (at most 2), j < cols (at most 4); x rows are k apart, y rows n apart. */
static inline void block(const float *x, const float *w, float *y, int64_t rows, int64_t cols, int64_t k,
                         int64_t n) {
    __m256 acc[2][4];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = _mm256_setzero_ps();
    int64_t p = 0;
    if (rows == 2 && cols == 4) { /* the common case, fully unrolled */
        for (; p + 8 <= k; p += 8) {
            __m256 w0 = _mm256_loadu_ps(w + p), w1 = _mm256_loadu_ps(w + k + p);
            __m256 w2 = _mm256_loadu_ps(w + 2 * k + p), w3 = _mm256_loadu_ps(w + 3 * k + p);
            __m256 x0 = _mm256_loadu_ps(x + p), x1 = _mm256_loadu_ps(x + k + p);
            acc[0][0] = _mm256_fmadd_ps(x0, w0, acc[0][0]);
            acc[0][1] = _mm256_fmadd_ps(x0, w1, acc[0][1]);
            acc[0][2] = _mm256_fmadd_ps(x0, w2, acc[0][2]);
            acc[0][3] = _mm256_fmadd_ps(x0, w3, acc[0][3]);
            acc[1][0] = _mm256_fmadd_ps(x1, w0, acc[1][0]);
            acc[1][1] = _mm256_fmadd_ps(x1, w1, acc[1][1]);
            acc[1][2] = _mm256_fmadd_ps(x1, w2, acc[1][2]);
            acc[1][3] = _mm256_fmadd_ps(x1, w3, acc[1][3]);
        }
    } else {
        for (; p + 8 <= k; p += 8)
            for (int64_t j = 0; j < cols; ++j) {
                __m256 wj = _mm256_loadu_ps(w + j * k + p);
                for (int64_t i = 0; i < rows; ++i)
                    acc[i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i * k + p), wj, acc[i][j]);
            }
    }
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
            float sum = horizontal_sum(acc[i][j]);
            for (int64_t q = p; q < k; ++q) sum += x[i * k + q] * w[j * k + q];
            y[i * n + j] = sum;
        }
}

void few_rows_times_transposed(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k,
                               int threads) {
    const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t j = 4 * b, cols = n - j < 4 ? n - j : 4;
        for (int64_t i = 0; i < m; i += 2)
            block(x + i * k, w + j * k, y + i * n + j, m - i < 2 ? m - i : 2, cols, k, n);
    }
}
