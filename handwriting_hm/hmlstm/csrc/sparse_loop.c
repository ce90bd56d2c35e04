/* The sparse training path's time loop in C: sparse.py's _SparseHMLSTM, forward and backward, for
 * float32 on the CPU with copy_gradient="straight".
 *
 * Python's version dispatches about 380 small torch operations per time step, and on a 2-core CPU
 * that, not arithmetic, is what it spends its time on. Here each direction is one call: the loop
 * over steps and layers, the gathers and scatters of the rows that compute, the layer norm, the
 * gates, the boundaries and their straight-through gradient, with the products through the
 * few-row kernel (few_rows.c); with copy_gradient="mixed" the COPY rows' gates and what the choice of
 * COPY passes back too. sparse_native.py lays out the buffers, draws the Bernoulli
 * uniforms, and turns the saved gradients of the pre-activations into weight gradients with one
 * GEMM per weight. Every equation below is sparse.py's; the comments there say why.
 *
 * Layout: every array is row-major float32 (masks uint8), B rows, T steps, layer l has H_l units
 * and G_l = 4 H_l + 1 pre-activations (4 H_l for the top layer, which has no boundary).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmlstm.h"

/* y = x w^T (+ y with accumulate) for x (m, k), w (n, k) and its transpose wt (k, n), y (m, n): few_rows.c's
   tiles from three rows, its row-by-row kernel below */
static void product(const SparseLoop *a, const float *x, const float *w, const float *wt, float *y, int64_t m,
                    int64_t n, int64_t k, int accumulate) {
    if (m >= 3)
        tile_product(x, wt, y, m, n, k, (int)a->threads, accumulate);
    else
        few_rows_product(x, w, y, m, n, k, (int)a->threads, accumulate);
}

static inline int64_t gates_of(const SparseLoop *a, int64_t l) {
    return 4 * a->sizes[l] + (l < a->layers - 1);
}

/* how many of layer l's pre-activations the layer norm covers: all, or the 4H gates without the boundary */
static inline int64_t normed_of(const SparseLoop *a, int64_t l) {
    return a->boundary_norm ? gates_of(a, l) : 4 * a->sizes[l];
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static inline float tanh_(float x) { return 2.0f / (1.0f + expf(-2.0f * x)) - 1.0f; }

/* Eq. 6: f, i, o = sigm, g = tanh, from a row's 4H pre-activations (after layer norm) */
static inline void gate_activations(const float *s, float *act, int64_t H) {
    for (int64_t j = 0; j < 3 * H; ++j) act[j] = sigmoid(s[j]);
    for (int64_t j = 3 * H; j < 4 * H; ++j) act[j] = tanh_(s[j]);
}

/* Eq. 8-9: z^ = step or Bernoulli (row r's uniform at step t) of hard_sigm(a s_z) */
static inline float detector(const SparseLoop *a, float boundary_input, int64_t t, int64_t l, int64_t r) {
    if (l == 0 && a->forced != NULL) return a->forced[t * a->batch + r];
    float z_tilde = (a->slope * boundary_input + 1.0f) / 2.0f;
    z_tilde = z_tilde < 0.0f ? 0.0f : (z_tilde > 1.0f ? 1.0f : z_tilde);
    return a->bernoulli ? (float)(a->uniforms[(t * (a->layers - 1) + l) * a->batch + r] < z_tilde)
                        : (float)(z_tilde > 0.5f);
}

static int64_t max_size(const SparseLoop *a) {
    int64_t m = 0;
    for (int64_t l = 0; l < a->layers; ++l) m = a->sizes[l] > m ? a->sizes[l] : m;
    return 4 * m + 1;
}

/* Working memory of one layer-step: row indices and a few (B, 4 max H + 1) matrices. */
typedef struct {
    int64_t *rows, *flush, *stale;
    float *x, *s, *y, *scalars;
} Work;

static int work_alloc(Work *w, const SparseLoop *a) {
    const int64_t B = a->batch, G = max_size(a);
    w->rows = malloc(sizeof(int64_t) * B);
    w->flush = malloc(sizeof(int64_t) * B);
    w->stale = malloc(sizeof(int64_t) * B);
    w->x = malloc(sizeof(float) * B * G);
    w->s = malloc(sizeof(float) * B * G);
    w->y = malloc(sizeof(float) * B * G);
    w->scalars = malloc(sizeof(float) * B * 3); /* d flush, d update, d copy per row */
    return w->rows && w->flush && w->stale && w->x && w->s && w->y && w->scalars;
}

static void work_free(Work *w) {
    free(w->rows); free(w->flush); free(w->stale); free(w->x); free(w->s); free(w->y); free(w->scalars);
}

/* ------------------------------------------------------------------------------------- forward */

/* Layer norm of one row of G values in place (y = x_hat gamma + beta); returns mean and 1/std. */
static void layer_norm_row(float *s, int64_t G, const float *weight, const float *bias, float eps, float *mean_out,
                           float *inverse_std_out) {
    double sum = 0.0, squares = 0.0;
    for (int64_t j = 0; j < G; ++j) sum += s[j];
    const float mean = (float)(sum / G);
    for (int64_t j = 0; j < G; ++j) squares += (double)(s[j] - mean) * (s[j] - mean);
    const float inverse_std = (float)(1.0 / sqrt(squares / G + eps));
    for (int64_t j = 0; j < G; ++j) s[j] = (s[j] - mean) * inverse_std * weight[j] + bias[j];
    *mean_out = mean;
    *inverse_std_out = inverse_std;
}

/* The COPY rows `rows` of layer l at step t, for copy_gradient "mixed" or "exact" (the gates, for the gradient
   of the choice of COPY) and for z_on_copy "recompute" (their z): s = U_l^l h^l_{t-1} + b, the top-down and
   bottom-up terms gated off (Eq. 5). The rows' h and c stay as they are, so s is the same all along a COPY
   run: computed at its first step, then read from the cache. */
static void copy_gates(const SparseLoop *a, int64_t t, int64_t l, const int64_t *rows, int64_t n, Work *w,
                       float *z_now) {
    const int64_t B = a->batch, H = a->sizes[l], G = gates_of(a, l), Z = a->layers - 1;
    const int top = l == a->layers - 1;
    const int64_t kept = a->saving ? t : 0;
    const float *h_prev = a->h[l] + t * B * H;
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = rows[i];
        if (a->copy_cached[l][r]) continue;
        memcpy(w->x + m * H, h_prev + r * H, sizeof(float) * H);
        memcpy(w->s + m * G, a->bias[l], sizeof(float) * G);
        w->stale[m++] = r;
    }
    if (m) product(a, w->x, a->recurrent[l], a->recurrent_t[l], w->s, m, G, H, 1);
    for (int64_t i = 0; i < m; ++i) {
        const int64_t r = w->stale[i];
        float *cached = a->copy_s[l] + r * G;
        memcpy(cached, w->s + i * G, sizeof(float) * G);
        if (a->layer_norm) {
            memcpy(a->copy_pre[l] + r * G, cached, sizeof(float) * G);
            layer_norm_row(cached, normed_of(a, l), a->norm_weight[l], a->norm_bias[l], a->eps,
                           a->copy_mean[l] + r, a->copy_inverse_std[l] + r);
        }
        a->copy_cached[l][r] = 1;
    }
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = rows[i], saved = kept * B + r;
        const float *si = a->copy_s[l] + r * G;
        if (a->saving) {
            gate_activations(si, a->activations[l] + saved * 4 * H, H);
            a->copied[l][saved] = 1;
            if (a->layer_norm) {
                memcpy(a->pre_norm[l] + saved * G, a->copy_pre[l] + r * G, sizeof(float) * G);
                a->mean[l][saved] = a->copy_mean[l][r];
                a->inverse_std[l][saved] = a->copy_inverse_std[l][r];
            }
        }
        if (top) continue;
        const float z_hat = detector(a, si[4 * H], t, l, r);
        if (a->recompute) { /* Eq. 5-9 as written: z from s_t at every step */
            z_now[r * Z + l] = z_hat;
            a->boundary_input[l][saved] = si[4 * H];
        } else if (a->saving) {
            a->copy_z_hat[l][saved] = z_hat;
        }
    }
}

static void forward_layer(const SparseLoop *a, int64_t t, int64_t l, Work *w) {
    const int64_t B = a->batch, L = a->layers, Z = L - 1, H = a->sizes[l], G = gates_of(a, l);
    const int top = l == L - 1;
    float *z_now = a->z + (t + 1) * B * Z, *z_before = a->z + t * B * Z;
    const float *h_prev = a->h[l] + t * B * H, *c_prev = a->c[l] + t * B * H;
    float *h_next = a->h[l] + (t + 1) * B * H, *c_next = a->c[l] + (t + 1) * B * H;
    const int64_t kept = a->saving ? t : 0; /* the step of the saved arrays this step writes */
    uint8_t *computed = a->computed[l] + kept * B;

    /* the rows that compute: in layer 1 the valid ones; above, those that UPDATE (z^{l-1}_t = 1) or
       FLUSH (z^l_{t-1} = 1); the others COPY and keep h, c and z */
    int64_t n = 0, n_copy = 0;
    for (int64_t r = 0; r < B; ++r) {
        const int valid = a->valid == NULL || a->valid[t * B + r];
        int on = valid;
        if (l > 0) on = on && (z_now[r * Z + l - 1] > 0.5f || (!top && z_before[r * Z + l] > 0.5f));
        computed[r] = (uint8_t)on;
        if (on) {
            w->rows[n++] = r;
        } else {
            memcpy(h_next + r * H, h_prev + r * H, sizeof(float) * H);
            memcpy(c_next + r * H, c_prev + r * H, sizeof(float) * H);
            if (l > 0 && valid && ((a->mixed && a->saving) || (a->recompute && !top))) w->flush[n_copy++] = r;
        }
    }
    if (n_copy > 0) copy_gates(a, t, l, w->flush, n_copy, w, z_now);
    if (n == 0) return;
    const int64_t *rows = w->rows;

    /* Eq. 5: s = U_l^l h^l_{t-1} + z^{l-1}_t W_{l-1}^l h^{l-1}_t + b (+ the top-down term below) */
    float *s = w->s;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = rows[i];
        memcpy(w->x + i * H, h_prev + r * H, sizeof(float) * H);
        memcpy(s + i * G, l == 0 ? a->projected + (t * B + r) * G : a->bias[l], sizeof(float) * G);
    }
    product(a, w->x, a->recurrent[l], a->recurrent_t[l], s, n, G, H, 1);
    if (l > 0) {
        const int64_t H_below = a->sizes[l - 1];
        const float *h_below = a->h[l - 1] + (t + 1) * B * H_below;
        for (int64_t i = 0; i < n; ++i) {
            const int64_t r = rows[i];
            const float z_below = z_now[r * Z + l - 1];
            for (int64_t j = 0; j < H_below; ++j) w->x[i * H_below + j] = z_below * h_below[r * H_below + j];
        }
        product(a, w->x, a->bottom_up[l], a->bottom_up_t[l], s, n, G, H_below, 1);
    }

#pragma omp parallel for schedule(static) num_threads(a->threads) if (a->threads > 1 && n * G >= 16384)
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = rows[i], saved = kept * B + r;
        float *si = s + i * G;
        const float z_prev = top ? 0.0f : z_before[r * Z + l];
        a->copy_cached[l][r] = 0; /* h and c change: a COPY run that follows starts its own s */
        if (!top) { /* + z^l_{t-1} U_{l+1}^l h^{l+1}_{t-1}, from the cache; kept for d z^l_{t-1} */
            const float *cached = a->cached_top_down[l] + r * G;
            memcpy(a->top_down_term[l] + saved * G, cached, sizeof(float) * G);
            for (int64_t j = 0; j < G; ++j) si[j] += z_prev * cached[j];
        }
        if (a->layer_norm) { /* over the whole pre-activation, or its gates only (boundary_norm) */
            memcpy(a->pre_norm[l] + saved * G, si, sizeof(float) * G);
            layer_norm_row(si, normed_of(a, l), a->norm_weight[l], a->norm_bias[l], a->eps, a->mean[l] + saved,
                           a->inverse_std[l] + saved);
        }
        float *act = a->activations[l] + saved * 4 * H;
        gate_activations(si, act, H);
        const float *f = act, *in = act + H, *o = act + 2 * H, *g = act + 3 * H;
        /* Eq. 2-3 without COPY: FLUSH c = i g where z^l_{t-1} = 1, UPDATE c = f c_{t-1} + i g elsewhere */
        const float *cp = c_prev + r * H;
        float *cn = c_next + r * H, *hn = h_next + r * H;
        for (int64_t j = 0; j < H; ++j) {
            const float c = z_prev > 0.5f ? in[j] * g[j] : in[j] * g[j] + f[j] * cp[j];
            cn[j] = c;
            hn[j] = o[j] * tanh_(c);
        }
        if (!top) {
            a->boundary_input[l][saved] = si[4 * H];
            z_now[r * Z + l] = detector(a, si[4 * H], t, l, r);
        }
    }

    if (l > 0) { /* h^l changed for these rows: refresh layer l-1's top-down term U_l^{l-1} h^l */
        const int64_t G_below = gates_of(a, l - 1);
        for (int64_t i = 0; i < n; ++i) memcpy(w->x + i * H, h_next + rows[i] * H, sizeof(float) * H);
        product(a, w->x, a->top_down[l - 1], a->top_down_t[l - 1], w->y, n, G_below, H, 0);
        for (int64_t i = 0; i < n; ++i)
            memcpy(a->cached_top_down[l - 1] + rows[i] * G_below, w->y + i * G_below, sizeof(float) * G_below);
    }
}

size_t sparse_loop_struct_size(void) { return sizeof(SparseLoop); }

int sparse_loop_forward(const SparseLoop *a) {
    Work w;
    if (!work_alloc(&w, a)) { work_free(&w); return 1; }
    const int64_t B = a->batch, Z = a->layers - 1;
    for (int64_t t = 0; t < a->steps; ++t) {
        memcpy(a->z + (t + 1) * B * Z, a->z + t * B * Z, sizeof(float) * B * Z); /* COPY rows keep z */
        for (int64_t l = 0; l < a->layers; ++l) forward_layer(a, t, l, &w);
    }
    work_free(&w);
    return 0;
}

/* ------------------------------------------------------------------------------------ backward */

/* Layer l's COPY rows at step t. With copy_gradient "mixed" or "exact": what the choice of COPY passes back.
   With flush = z_prev, update = (1 - z_prev) z_below, copy = (1 - z_prev)(1 - z_below) and z_prev = z_below = 0
   on these rows, d z_prev = d flush - d copy and d z_below = d update - d copy. Their h and c gradients pass
   through unchanged, as COPY is the identity. With z kept ("mixed"), z = copy z_prev + (1 - copy) z^ passes
   none back along the run (core.py), so the gradient of z_prev is replaced, not added to. With z recomputed,
   z = z^(s) passes its gradient through the straight-through estimator into s = U h_{t-1} + b (and the norm):
   to h_{t-1}, and through grad_s to U and b; the choice passes back only with "exact". */
static void copy_backward(const SparseLoop *a, int64_t t, int64_t l, Work *w) {
    const int64_t B = a->batch, Z = a->layers - 1, H = a->sizes[l], G = gates_of(a, l), N = normed_of(a, l);
    const int top = l == a->layers - 1;
    int64_t m = 0; /* rows whose recomputed z passes gradient into s */
    for (int64_t r = 0; r < B; ++r) {
        const int64_t saved = t * B + r;
        if (!a->copied[l][saved]) continue;
        const float *act = a->activations[l] + saved * 4 * H;
        const float *f = act, *in = act + H, *o = act + 2 * H, *g = act + 3 * H;
        const float *hp = a->h[l] + (t * B + r) * H, *cp = a->c[l] + (t * B + r) * H;
        const float *dh = a->grad_h[l] + r * H, *dc = a->grad_c[l] + r * H;
        float flush_sum = 0.0f, update_sum = 0.0f, copy_sum = 0.0f;
        for (int64_t j = 0; j < H; ++j) { /* Eq. 2: c = flush i g + update (f c_prev + i g) + copy c_prev */
            flush_sum += dc[j] * in[j] * g[j];
            update_sum += dc[j] * f[j] * cp[j];
            copy_sum += dc[j] * cp[j] + dh[j] * (hp[j] - o[j] * tanh_(cp[j])); /* Eq. 3, c = c_prev here */
        }
        const float d_update = flush_sum + update_sum;
        if (!top && a->recompute) {
            const float dz = a->grad_z[r * Z + l];
            const float ds_z = fabsf(a->slope * a->boundary_input[l][saved]) < 1.0f ? dz * (a->slope / 2.0f) : 0.0f;
            a->grad_z[r * Z + l] = a->mixed ? flush_sum - copy_sum : 0.0f;
            if (ds_z != 0.0f) {
                float *ds = w->s + m * G;
                memset(ds, 0, sizeof(float) * G);
                ds[4 * H] = ds_z;
                if (a->layer_norm && N == G) { /* the norm's backward for d y = (0, ..., 0, ds_z) */
                    const float mean = a->mean[l][saved], inverse_std = a->inverse_std[l][saved];
                    const float *x = a->pre_norm[l] + saved * G, *gamma = a->norm_weight[l];
                    const float x_hat_z = (x[4 * H] - mean) * inverse_std, d_x_hat_z = ds_z * gamma[4 * H];
                    const float mean_d = d_x_hat_z / N, mean_dot = d_x_hat_z * x_hat_z / N;
                    for (int64_t j = 0; j < N; ++j) {
                        const float x_hat = (x[j] - mean) * inverse_std;
                        ds[j] = inverse_std * ((j == 4 * H ? d_x_hat_z : 0.0f) - mean_d - x_hat * mean_dot);
                    }
                    a->grad_norm_weight[l][4 * H] += ds_z * x_hat_z;
                    a->grad_norm_bias[l][4 * H] += ds_z;
                }
                memcpy(a->grad_s[l] + saved * G, ds, sizeof(float) * G);
                w->stale[m++] = r;
            }
        } else if (!top && a->mixed) { /* z = copy z_prev + (1 - copy) z^, z_prev = 0 */
            copy_sum -= a->grad_z[r * Z + l] * a->copy_z_hat[l][saved];
            a->grad_z[r * Z + l] = flush_sum - copy_sum;
        }
        if (a->mixed) a->grad_z[r * Z + l - 1] += d_update - copy_sum;
    }
    if (m == 0) return;
    /* d h^l_{t-1} += d s U_l^l for the rows whose z read s */
    product(a, w->s, a->recurrent_t[l], a->recurrent[l], w->y, m, H, G, 0);
    for (int64_t i = 0; i < m; ++i) {
        float *target = a->grad_h[l] + w->stale[i] * H;
        for (int64_t j = 0; j < H; ++j) target[j] += w->y[i * H + j];
    }
    /* the gated terms are off (z_prev = z_below = 0) but their gates read d s: d z_prev += d s . U_{l+1}^l h^{l+1}_{t-1},
       d z_below += d s . W_{l-1}^l h^{l-1}_t */
    const int64_t H_above = a->sizes[l + 1], H_below = a->sizes[l - 1];
    product(a, w->s, a->top_down_t[l], a->top_down[l], w->y, m, H_above, G, 0);
    for (int64_t i = 0; i < m; ++i) {
        const int64_t r = w->stale[i];
        const float *above = a->h[l + 1] + (t * B + r) * H_above;
        float dot = 0.0f;
        for (int64_t j = 0; j < H_above; ++j) dot += w->y[i * H_above + j] * above[j];
        a->grad_z[r * Z + l] += dot;
    }
    product(a, w->s, a->bottom_up_t[l], a->bottom_up[l], w->y, m, H_below, G, 0);
    for (int64_t i = 0; i < m; ++i) {
        const int64_t r = w->stale[i];
        const float *below = a->h[l - 1] + ((t + 1) * B + r) * H_below;
        float dot = 0.0f;
        for (int64_t j = 0; j < H_below; ++j) dot += w->y[i * H_below + j] * below[j];
        a->grad_z[r * Z + l - 1] += dot;
    }
}

static void backward_layer(const SparseLoop *a, int64_t t, int64_t l, Work *w) {
    const int64_t B = a->batch, L = a->layers, Z = L - 1, H = a->sizes[l], G = gates_of(a, l), N = normed_of(a, l);
    const int top = l == L - 1;
    const uint8_t *computed = a->computed[l] + t * B;
    const float *z_now = a->z + (t + 1) * B * Z, *z_before = a->z + t * B * Z;
    const float *h_prev = a->h[l] + t * B * H, *c_prev = a->c[l] + t * B * H;
    if ((a->mixed || a->recompute) && l > 0) copy_backward(a, t, l, w);
    int64_t n = 0;
    for (int64_t r = 0; r < B; ++r)
        if (computed[r]) w->rows[n++] = r;
    if (n == 0) return; /* every row COPYs: its gradient passes straight to the previous state */
    const int64_t *rows = w->rows;
    float *ds_rows = w->s, *d_flush = w->scalars, *d_update = w->scalars + B, *d_copy = w->scalars + 2 * B;

#pragma omp parallel for schedule(static) num_threads(a->threads) if (a->threads > 1 && n * G >= 16384)
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = rows[i], saved = t * B + r;
        const float *act = a->activations[l] + saved * 4 * H;
        const float *f = act, *in = act + H, *o = act + 2 * H, *g = act + 3 * H;
        const float *cp = c_prev + r * H, *hp = h_prev + r * H;
        float *dh = a->grad_h[l] + r * H, *dc = a->grad_c[l] + r * H;
        float *ds = ds_rows + i * G;
        const float z_prev = top ? 0.0f : z_before[r * Z + l], update = 1.0f - z_prev;
        float flush_sum = 0.0f, update_sum = 0.0f, copy_sum = 0.0f;
        for (int64_t j = 0; j < H; ++j) {
            const float ig = in[j] * g[j], fc = f[j] * cp[j];
            const float c = top ? ig + fc : ig + fc * update; /* recomputed: cheaper than saved */
            const float tanh_c = tanh_(c);
            const float d_o = dh[j] * tanh_c;
            copy_sum += dh[j] * (hp[j] - o[j] * tanh_c); /* Eq. 3: h = copy h_prev + (1 - copy) o tanh(c) */
            const float dcj = dc[j] + dh[j] * o[j] * (1.0f - tanh_c * tanh_c);
            flush_sum += dcj * ig; /* Eq. 2: c = flush i g + update (f c_prev + i g) + copy c_prev */
            update_sum += dcj * fc;
            copy_sum += dcj * cp[j];
            const float dc_update = top ? dcj : dcj * update;
            dc[j] = dc_update * f[j];
            ds[j] = dc_update * cp[j] * f[j] * (1.0f - f[j]);
            ds[H + j] = dcj * g[j] * in[j] * (1.0f - in[j]);
            ds[2 * H + j] = d_o * o[j] * (1.0f - o[j]);
            ds[3 * H + j] = dcj * in[j] * (1.0f - g[j] * g[j]);
        }
        d_flush[i] = flush_sum;
        d_update[i] = flush_sum + update_sum;
        if (!top) { /* z = z_hat here, whose straight-through gradient is a/2 inside |a s_z| < 1 */
            const float dz = a->grad_z[r * Z + l];
            if (!a->recompute) copy_sum += dz * (z_prev - z_now[r * Z + l]); /* z = copy z_prev + (1 - copy) z^ */
            const int given = l == 0 && a->forced != NULL; /* a forced boundary passes nothing to s_z */
            ds[4 * H] = !given && fabsf(a->slope * a->boundary_input[l][saved]) < 1.0f ? dz * (a->slope / 2.0f) : 0.0f;
        }
        d_copy[i] = copy_sum;
        if (a->layer_norm) { /* y = x_hat gamma + beta over the first N values; the rest pass as they are */
            const float mean = a->mean[l][saved], inverse_std = a->inverse_std[l][saved];
            const float *x = a->pre_norm[l] + saved * G, *gamma = a->norm_weight[l];
            double sum = 0.0, dot = 0.0;
            for (int64_t j = 0; j < N; ++j) {
                const float x_hat = (x[j] - mean) * inverse_std, d_x_hat = ds[j] * gamma[j];
                sum += d_x_hat;
                dot += d_x_hat * x_hat;
            }
            const float mean_d = (float)(sum / N), mean_dot = (float)(dot / N);
            float *normed = a->grad_s[l] + saved * G; /* d y, for the norm's own gradients below */
            for (int64_t j = 0; j < N; ++j) {
                const float x_hat = (x[j] - mean) * inverse_std;
                normed[j] = ds[j];
                ds[j] = inverse_std * (ds[j] * gamma[j] - mean_d - x_hat * mean_dot);
            }
        }
    }
    if (a->layer_norm) { /* gamma and beta: sums over the rows, in row order */
        float *gw = a->grad_norm_weight[l], *gb = a->grad_norm_bias[l];
        for (int64_t i = 0; i < n; ++i) {
            const int64_t saved = t * B + rows[i];
            const float mean = a->mean[l][saved], inverse_std = a->inverse_std[l][saved];
            const float *x = a->pre_norm[l] + saved * G, *normed = a->grad_s[l] + saved * G;
            for (int64_t j = 0; j < N; ++j) {
                gw[j] += normed[j] * (x[j] - mean) * inverse_std;
                gb[j] += normed[j];
            }
        }
    }
    for (int64_t i = 0; i < n; ++i) memcpy(a->grad_s[l] + (t * B + rows[i]) * G, ds_rows + i * G, sizeof(float) * G);

    /* d h^l_{t-1} = d s U_l^l for these rows (replaced: their h_{t-1} reaches the loss only through s) */
    product(a, ds_rows, a->recurrent_t[l], a->recurrent[l], w->y, n, H, G, 0);
    for (int64_t i = 0; i < n; ++i) memcpy(a->grad_h[l] + rows[i] * H, w->y + i * H, sizeof(float) * H);

    if (!top) {
        /* flush = z_prev, update = (1 - z_prev) z_below, copy = (1 - z_prev)(1 - z_below); the top-down
           term s += z_prev U h^{l+1} gives d z_prev the saved (ungated) term's d s . U h^{l+1} */
        int64_t m = 0;
        for (int64_t i = 0; i < n; ++i) {
            const int64_t r = rows[i];
            const float below = l == 0 ? 1.0f : z_now[r * Z + l - 1];
            const float *term = a->top_down_term[l] + (t * B + r) * G, *ds = ds_rows + i * G;
            float dot = 0.0f;
            for (int64_t j = 0; j < G; ++j) dot += ds[j] * term[j];
            a->grad_z[r * Z + l] = d_flush[i] - d_update[i] * below - d_copy[i] * (1.0f - below) + dot;
            if (z_before[r * Z + l] > 0.5f) {
                memcpy(w->x + m * G, ds, sizeof(float) * G);
                w->flush[m++] = r;
            }
        }
        if (m) { /* the FLUSH rows read h^{l+1}_{t-1} through the top-down term */
            const int64_t H_above = a->sizes[l + 1];
            product(a, w->x, a->top_down_t[l], a->top_down[l], w->y, m, H_above, G, 0);
            for (int64_t i = 0; i < m; ++i) {
                float *target = a->grad_h[l + 1] + w->flush[i] * H_above;
                for (int64_t j = 0; j < H_above; ++j) target[j] += w->y[i * H_above + j];
            }
        }
    }
    if (l > 0) { /* the bottom-up term z^{l-1}_t W_{l-1}^l h^{l-1}_t */
        const int64_t H_below = a->sizes[l - 1];
        const float *h_below = a->h[l - 1] + (t + 1) * B * H_below;
        product(a, ds_rows, a->bottom_up_t[l], a->bottom_up[l], w->y, n, H_below, G, 0);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t r = rows[i];
            const float below = z_now[r * Z + l - 1];
            const float *da = w->y + i * H_below, *hb = h_below + r * H_below;
            float *target = a->grad_h[l - 1] + r * H_below, dot = 0.0f;
            for (int64_t j = 0; j < H_below; ++j) {
                target[j] += below * da[j];
                dot += da[j] * hb[j];
            }
            const float choice = d_update[i] - d_copy[i];
            a->grad_z[r * Z + l - 1] += dot + (top ? choice : choice * (1.0f - z_before[r * Z + l]));
        }
    }
}

int sparse_loop_backward(const SparseLoop *a) {
    Work w;
    if (!work_alloc(&w, a)) { work_free(&w); return 1; }
    const int64_t B = a->batch, Z = a->layers - 1;
    for (int64_t t = a->steps - 1; t >= 0; --t) {
        for (int64_t l = 0; l < a->layers; ++l) {
            const int64_t H = a->sizes[l];
            const float *add = a->grad_hidden[l] + t * B * H;
            for (int64_t j = 0; j < B * H; ++j) a->grad_h[l][j] += add[j];
        }
        for (int64_t j = 0; j < B * Z; ++j) a->grad_z[j] += a->grad_boundaries[t * B * Z + j];
        for (int64_t l = a->layers - 1; l >= 0; --l) backward_layer(a, t, l, &w);
    }
    work_free(&w);
    return 0;
}
