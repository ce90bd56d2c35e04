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

#include "hmlstm.h"

static inline float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(s);
}

/* y[i][j] (+)= x[i] . w[j] for i < rows (at most 2), j < cols (at most 4); x rows are k apart, y rows n apart. */
static inline void block(const float *x, const float *w, float *y, int64_t rows, int64_t cols, int64_t k,
                         int64_t n, int accumulate) {
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
            y[i * n + j] = accumulate ? y[i * n + j] + sum : sum;
        }
}

/* y = x w^T, or y += x w^T with `accumulate` (sparse_loop.c's products) */
void few_rows_product(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k, int threads,
                      int accumulate) {
    const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t j = 4 * b, cols = n - j < 4 ? n - j : 4;
        for (int64_t i = 0; i < m; i += 2)
            block(x + i * k, w + j * k, y + i * n + j, m - i < 2 ? m - i : 2, cols, k, n, accumulate);
    }
}

void few_rows_times_transposed(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k,
                               int threads) {
    few_rows_product(x, w, y, m, n, k, threads, 0);
}

/* ------------------------------------------------------------------------------------------------
 * y = x w, w given as wt = (k, n) row-major: the C loop's products of 3 rows and more
 * (sparse_loop.c), where this form is 1.3-1.8x the one above. A tile of up to six rows of y and
 * two vectors of columns is kept in twelve accumulators; each step of k loads two vectors of one
 * row of wt and broadcasts one element of each row of x. The strip of wt a tile reads (k rows of
 * two vectors) stays in L1 while the tiles of every row of x pass over it. With AVX-512 a vector
 * holds sixteen floats, else eight; the last strip, narrower, is read and written under a mask.
 */
#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define vec_zero _mm512_setzero_ps
#define vec_fma _mm512_fmadd_ps
#define vec_add _mm512_add_ps
#define vec_broadcast(p) _mm512_set1_ps(*(p))
typedef __mmask16 lane_mask;
static inline lane_mask mask_of(int64_t lanes) {
    return lanes >= LANES ? (lane_mask)0xFFFF : lanes <= 0 ? (lane_mask)0 : (lane_mask)((1u << lanes) - 1u);
}
#define vec_loadu _mm512_loadu_ps
#define vec_storeu _mm512_storeu_ps
static inline vec vec_load(const float *p, lane_mask m) { return _mm512_maskz_loadu_ps(m, p); }
static inline void vec_store(float *p, vec v, lane_mask m) { _mm512_mask_storeu_ps(p, m, v); }
#else
typedef __m256 vec;
#define LANES 8
#define vec_zero _mm256_setzero_ps
#define vec_fma _mm256_fmadd_ps
#define vec_add _mm256_add_ps
#define vec_broadcast(p) _mm256_broadcast_ss(p)
typedef __m256i lane_mask;
static inline lane_mask mask_of(int64_t lanes) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(lanes < LANES ? lanes : LANES)), index);
}
#define vec_loadu _mm256_loadu_ps
#define vec_storeu _mm256_storeu_ps
static inline vec vec_load(const float *p, lane_mask m) { return _mm256_maskload_ps(p, m); }
static inline void vec_store(float *p, vec v, lane_mask m) { _mm256_maskstore_ps(p, m, v); }
#endif
#define STRIP (2 * LANES)
#define TILE_ROWS 6

/* y[0:R, 0:cols] (+)= x[0:R, :] wt[:, 0:cols] for cols <= STRIP; `whole`: cols == STRIP, no masks */
static inline __attribute__((always_inline)) void tile(const float *x, const float *wt, float *y, const int R,
                                                       int64_t cols, int64_t k, int64_t n, int accumulate,
                                                       const int whole) {
    const lane_mask first = mask_of(cols), second = mask_of(cols - LANES);
    vec acc[TILE_ROWS][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = vec_zero();
    for (int64_t p = 0; p < k; ++p) {
        const float *row = wt + p * n;
        const vec b0 = whole ? vec_loadu(row) : vec_load(row, first);
        const vec b1 = whole ? vec_loadu(row + LANES) : vec_load(row + LANES, second);
        for (int r = 0; r < R; ++r) {
            const vec a = vec_broadcast(x + r * k + p);
            acc[r][0] = vec_fma(a, b0, acc[r][0]);
            acc[r][1] = vec_fma(a, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < R; ++r) {
        float *yr = y + r * n;
        if (whole) {
            if (accumulate) {
                acc[r][0] = vec_add(acc[r][0], vec_loadu(yr));
                acc[r][1] = vec_add(acc[r][1], vec_loadu(yr + LANES));
            }
            vec_storeu(yr, acc[r][0]);
            vec_storeu(yr + LANES, acc[r][1]);
        } else {
            if (accumulate) {
                acc[r][0] = vec_add(acc[r][0], vec_load(yr, first));
                acc[r][1] = vec_add(acc[r][1], vec_load(yr + LANES, second));
            }
            vec_store(yr, acc[r][0], first);
            vec_store(yr + LANES, acc[r][1], second);
        }
    }
}

/* rows [i, i + R) of one strip, R from 1 to TILE_ROWS as a constant for each tile */
static void tile_rows(const float *x, const float *wt, float *y, int64_t R, int64_t cols, int64_t k, int64_t n,
                      int accumulate) {
#define TILE(rows) \
    (cols == STRIP ? tile(x, wt, y, rows, cols, k, n, accumulate, 1) : tile(x, wt, y, rows, cols, k, n, accumulate, 0))
    switch (R) {
        case 6: TILE(6); break;
        case 5: TILE(5); break;
        case 4: TILE(4); break;
        case 3: TILE(3); break;
        case 2: TILE(2); break;
        case 1: TILE(1); break;
        default: break;
    }
#undef TILE
}

/* y = x wt (+ y with `accumulate`) for x (m, k), wt (k, n), y (m, n) */
void tile_product(const float *x, const float *wt, float *y, int64_t m, int64_t n, int64_t k, int threads,
                  int accumulate) {
    const int64_t strips = (n + STRIP - 1) / STRIP;
    /* tiles of six rows; a remainder of one or two rows is evened out with the tile before it */
    int64_t whole = m / TILE_ROWS, rest = m % TILE_ROWS;
    if (whole > 0 && rest > 0 && rest < 3) whole -= 1, rest += TILE_ROWS;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t s = 0; s < strips; ++s) {
        const int64_t j = s * STRIP, cols = n - j < STRIP ? n - j : STRIP;
        for (int64_t t = 0; t < whole; ++t)
            tile_rows(x + t * TILE_ROWS * k, wt + j, y + t * TILE_ROWS * n + j, TILE_ROWS, cols, k, n, accumulate);
        const int64_t i = whole * TILE_ROWS;
        if (rest > TILE_ROWS) { /* 7 or 8 rows: two tiles of 4 and 3, or 4 and 4 */
            const int64_t first = (rest + 1) / 2;
            tile_rows(x + i * k, wt + j, y + i * n + j, first, cols, k, n, accumulate);
            tile_rows(x + (i + first) * k, wt + j, y + (i + first) * n + j, rest - first, cols, k, n, accumulate);
        } else if (rest > 0) {
            tile_rows(x + i * k, wt + j, y + i * n + j, rest, cols, k, n, accumulate);
        }
    }
}
