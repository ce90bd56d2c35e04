/* What the library's two C sources share with each other and with Python: MAX_LAYERS, the sparse loop's
 * arguments (SparseLoop, mirrored field for field by paths/sparse_native.py's ctypes structure, which checks
 * its size against sparse_loop_struct_size() when it loads the library), and every exported function.
 */
#ifndef HANDWRITING_HM_HMLSTM_H
#define HANDWRITING_HM_HMLSTM_H

#include <stddef.h>
#include <stdint.h>

#define MAX_LAYERS 8

/* few_rows.c: y = x w^T (+ y with accumulate) for x (m, k), w (n, k); y = x wt for wt (k, n) */
void few_rows_product(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k, int threads,
                      int accumulate);
void few_rows_times_transposed(const float *x, const float *w, float *y, int64_t m, int64_t n, int64_t k,
                               int threads);
void tile_product(const float *x, const float *wt, float *y, int64_t m, int64_t n, int64_t k, int threads,
                  int accumulate);

/* sparse_loop.c */
typedef struct {
    int64_t layers, batch, steps, threads, bernoulli, layer_norm, mixed;
    int64_t boundary_norm;    /* 1: the layer norm covers the boundary unit; 0: it keeps its raw sum */
    int64_t recompute;        /* z_on_copy "recompute": a COPY row computes its z from s = U h_{t-1} + b */
    int64_t saving;           /* 0: no backward will follow; the arrays below "saved" hold one step, rewritten */
    int64_t sizes[MAX_LAYERS];
    float slope, eps;
    const uint8_t *valid;     /* (T, B), or NULL: every step of every row is valid */
    const float *uniforms;    /* (T, L-1, B) Bernoulli draws, or NULL */
    const float *forced;      /* (T, B) layer 1's boundaries, given (the oracle), or NULL */
    const float *projected;   /* (T, B, G_0): W_0^1 x_t + b, layer 1's input term for every step */
    float *z;                 /* (T+1, B, L-1) boundaries after every step; [0] is the initial z */
    float *h[MAX_LAYERS];     /* (T+1, B, H_l) */
    float *c[MAX_LAYERS];
    const float *recurrent[MAX_LAYERS], *bias[MAX_LAYERS];   /* U_l^l (G_l, H_l), b (G_l) */
    const float *top_down[MAX_LAYERS];                       /* U_{l+1}^l (G_l, H_{l+1}), l < L-1 */
    const float *bottom_up[MAX_LAYERS];                      /* W_{l-1}^l (G_l, H_{l-1}), l > 0 */
    const float *recurrent_t[MAX_LAYERS], *top_down_t[MAX_LAYERS], *bottom_up_t[MAX_LAYERS]; /* their transposes */
    const float *norm_weight[MAX_LAYERS], *norm_bias[MAX_LAYERS];            /* (N_l): normed_of(l) values */
    float *cached_top_down[MAX_LAYERS]; /* (B, G_l): U_{l+1}^l h^{l+1} of the current state, l < L-1 */
    /* saved by the forward pass for the rows that computed */
    uint8_t *computed[MAX_LAYERS];      /* (T, B) */
    float *activations[MAX_LAYERS];     /* (T, B, 4 H_l): f, i, o, g */
    float *pre_norm[MAX_LAYERS];        /* (T, B, G_l), with layer norm */
    float *mean[MAX_LAYERS], *inverse_std[MAX_LAYERS]; /* (T, B), with layer norm */
    float *top_down_term[MAX_LAYERS];   /* (T, B, G_l): the ungated top-down term read, l < L-1 */
    float *boundary_input[MAX_LAYERS];  /* (T, B): s_z after layer norm, l < L-1 */
    uint8_t *copied[MAX_LAYERS];        /* (T, B): mixed or recompute, the valid rows that COPYed, l > 0 */
    float *copy_z_hat[MAX_LAYERS];      /* (T, B): mixed, the z^ those rows would have had, 0 < l < L-1 */
    /* a COPY row's s = U h_{t-1} + b (after the norm) does not change along its COPY run: one product per run */
    float *copy_s[MAX_LAYERS], *copy_pre[MAX_LAYERS];       /* (B, G_l): after and before the norm */
    float *copy_mean[MAX_LAYERS], *copy_inverse_std[MAX_LAYERS]; /* (B) */
    uint8_t *copy_cached[MAX_LAYERS];   /* (B): 1 while row r's copy_s holds its current run's */
    /* the backward pass */
    const float *grad_hidden[MAX_LAYERS]; /* (T, B, H_l), padding already zeroed */
    const float *grad_boundaries;         /* (T, B, L-1), padding already zeroed */
    float *grad_h[MAX_LAYERS], *grad_c[MAX_LAYERS]; /* (B, H_l): in, the final state's; out, the initial's */
    float *grad_z;                                  /* (B, L-1), likewise */
    float *grad_s[MAX_LAYERS];            /* (T, B, G_l), zeros on entry: d loss / d s of the computing rows */
    float *grad_norm_weight[MAX_LAYERS], *grad_norm_bias[MAX_LAYERS]; /* (G_l), zeros on entry */
} SparseLoop;

int sparse_loop_forward(const SparseLoop *a);
int sparse_loop_backward(const SparseLoop *a);
size_t sparse_loop_struct_size(void); /* sizeof(SparseLoop), for the loader's check of its mirror */

#endif
