"""The HM-LSTM's element-wise work for one layer and step, as Triton kernels (see triton_cell.py).

Kept apart from triton_cell.py so that the cell module imports (and reports the path as
unavailable) where triton is not installed. Written for triton 3.6.0. No @triton.jit helpers:
under the interpreter each nested call costs milliseconds (it re-patches triton.language), and
tanh is 2 sigmoid(2x) - 1 because tl has none outside libdevice, which the interpreter lacks.

Each program takes BLOCK_B rows: a row's gates are four (BLOCK_B, BLOCK_H >= H) tiles
(f, i, o, g), and its boundary pre-activation (below the top layer) and every other per-row
value a (BLOCK_B, 1) column, so that row reductions keep their axis and broadcast back.
Layer 1 (IS_BOTTOM) reads z^0 = 1; the top layer (IS_TOP) has no detector, no top-down input.
MODE is the boundary mode: 0 step, 1 bernoulli (with a pre-drawn uniform per row), 2 soft.
The slope is read from a one-element tensor (slope_ptr), not passed as a number, so that a
captured CUDA graph reads the value the trainer wrote before each replay.
STRAIGHT_COPY (backward only): core.copy_gradient == "straight" (see HMLSTM.step).
TRITON_INTERPRET=1 must be set before this module is imported: @triton.jit reads it when it
decorates a kernel.
"""
import triton
import triton.language as tl

INTERPRETED = bool(triton.knobs.runtime.interpret)  # what @triton.jit below saw


@triton.jit
def hmlstm_forward_kernel(
        s_ptr, s_stride, add_ptr, add_stride, norm_w_ptr, norm_b_ptr, eps,
        h_prev_ptr, h_out_ptr, h_stride, c_prev_ptr, c_out_ptr, c_stride,
        z_prev_ptr, z_below_ptr, z_out_ptr, z_step_ptr, z_hat_ptr, s_z_ptr, z_stride,
        valid_ptr, uniform_ptr, slope_ptr,
        act_ptr, act_stride, x_hat_ptr, x_hat_stride, rstd_ptr,
        up_ptr, up_stride, down_ptr, down_stride, z_down_ptr,
        B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, IS_BOTTOM: tl.constexpr, IS_TOP: tl.constexpr,
        LAYER_NORM: tl.constexpr, HAS_MASK: tl.constexpr, MODE: tl.constexpr):
    """Eq. 2-9 for BLOCK_B rows of layer l at step t, from s = the GEMM's product (without bias).

    Writes the new state (h, c into the state buffers; z unmasked into z_step, masked into
    z_out), what the backward needs (f, i, o, g; z-hat; the boundary's input; x-hat and 1/std),
    and the next GEMMs' inputs: z^l_t h^l_t into the layer above's bottom-up slot (up_ptr)
    and z^{l-1}_t h^l_t into the layer below's top-down slot for step t+1 (down_ptr).
    """
    row = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]  # a column of rows
    row_ok = row < B
    col = tl.arange(0, BLOCK_H)[None, :]
    col_ok = col < H
    inside = row_ok & col_ok
    s_row, add_row = s_ptr + row * s_stride, add_ptr + row * add_stride
    s_f = (tl.load(s_row + 0 * H + col, mask=inside, other=0.0)
           + tl.load(add_row + 0 * H + col, mask=inside, other=0.0))
    s_i = (tl.load(s_row + 1 * H + col, mask=inside, other=0.0)
           + tl.load(add_row + 1 * H + col, mask=inside, other=0.0))
    s_o = (tl.load(s_row + 2 * H + col, mask=inside, other=0.0)
           + tl.load(add_row + 2 * H + col, mask=inside, other=0.0))
    s_g = (tl.load(s_row + 3 * H + col, mask=inside, other=0.0)
           + tl.load(add_row + 3 * H + col, mask=inside, other=0.0))
    if not IS_TOP:
        s_z = (tl.load(s_row + 4 * H, mask=row_ok, other=0.0)
               + tl.load(add_row + 4 * H, mask=row_ok, other=0.0))

    if LAYER_NORM:  # over the whole pre-activation, the boundary's included (core's docstring)
        n = 4 * H
        total = tl.sum(s_f + s_i + s_o + s_g, axis=1, keep_dims=True)
        if not IS_TOP:
            n = n + 1
            total = total + s_z
        mean = total / n
        d_f = tl.where(inside, s_f - mean, 0.0)
        d_i = tl.where(inside, s_i - mean, 0.0)
        d_o = tl.where(inside, s_o - mean, 0.0)
        d_g = tl.where(inside, s_g - mean, 0.0)
        squares = tl.sum(d_f * d_f + d_i * d_i + d_o * d_o + d_g * d_g, axis=1, keep_dims=True)
        if not IS_TOP:
            squares = squares + (s_z - mean) * (s_z - mean)
        rstd = 1.0 / tl.sqrt(squares / n + eps)
        x_row = x_hat_ptr + row * x_hat_stride
        tl.store(x_row + 0 * H + col, d_f * rstd, mask=inside)
        tl.store(x_row + 1 * H + col, d_i * rstd, mask=inside)
        tl.store(x_row + 2 * H + col, d_o * rstd, mask=inside)
        tl.store(x_row + 3 * H + col, d_g * rstd, mask=inside)
        tl.store(rstd_ptr + row, rstd, mask=row_ok)
        s_f = (d_f * rstd * tl.load(norm_w_ptr + 0 * H + col, mask=col_ok, other=0.0)
               + tl.load(norm_b_ptr + 0 * H + col, mask=col_ok, other=0.0))
        s_i = (d_i * rstd * tl.load(norm_w_ptr + 1 * H + col, mask=col_ok, other=0.0)
               + tl.load(norm_b_ptr + 1 * H + col, mask=col_ok, other=0.0))
        s_o = (d_o * rstd * tl.load(norm_w_ptr + 2 * H + col, mask=col_ok, other=0.0)
               + tl.load(norm_b_ptr + 2 * H + col, mask=col_ok, other=0.0))
        s_g = (d_g * rstd * tl.load(norm_w_ptr + 3 * H + col, mask=col_ok, other=0.0)
               + tl.load(norm_b_ptr + 3 * H + col, mask=col_ok, other=0.0))
        if not IS_TOP:
            x_hat_z = (s_z - mean) * rstd
            tl.store(x_row + 4 * H, x_hat_z, mask=row_ok)
            s_z = x_hat_z * tl.load(norm_w_ptr + 4 * H) + tl.load(norm_b_ptr + 4 * H)

    f, i, o, g = tl.sigmoid(s_f), tl.sigmoid(s_i), tl.sigmoid(s_o), 2 * tl.sigmoid(2 * s_g) - 1  # Eq. 6
    act_row = act_ptr + row * act_stride
    tl.store(act_row + 0 * H + col, f, mask=inside)
    tl.store(act_row + 1 * H + col, i, mask=inside)
    tl.store(act_row + 2 * H + col, o, mask=inside)
    tl.store(act_row + 3 * H + col, g, mask=inside)

    # Eq. 2-3 as one sum, as the reference computes it: with binary z one term is 1
    z_prev = 0.0 if IS_TOP else tl.load(z_prev_ptr + row * z_stride, mask=row_ok, other=0.0)
    z_below = 1.0 if IS_BOTTOM else tl.load(z_below_ptr + row * z_stride, mask=row_ok, other=0.0)
    flush, update, copy = z_prev, (1 - z_prev) * z_below, (1 - z_prev) * (1 - z_below)
    h_prev = tl.load(h_prev_ptr + row * h_stride + col, mask=inside, other=0.0)
    c_prev = tl.load(c_prev_ptr + row * c_stride + col, mask=inside, other=0.0)
    c = flush * (i * g) + update * (f * c_prev + i * g) + copy * c_prev
    h = copy * h_prev + (1 - copy) * (o * (2 * tl.sigmoid(2 * c) - 1))

    if HAS_MASK:  # a padded step leaves the state as it was
        keep = tl.load(valid_ptr + row, mask=row_ok, other=0.0) > 0
        h = tl.where(keep, h, h_prev)
        c = tl.where(keep, c, c_prev)
    tl.store(h_out_ptr + row * h_stride + col, h, mask=inside)
    tl.store(c_out_ptr + row * c_stride + col, c, mask=inside)

    if not IS_TOP:  # Eq. 8-9; a COPY keeps its z
        slope = tl.load(slope_ptr)
        z_tilde = tl.minimum(tl.maximum((slope * s_z + 1.0) / 2.0, 0.0), 1.0)
        if MODE == 0:
            z_hat = (z_tilde > 0.5).to(z_tilde.dtype)
        elif MODE == 1:  # a pre-drawn uniform: P(u < z~) = z~
            z_hat = (tl.load(uniform_ptr + row, mask=row_ok, other=0.0) < z_tilde).to(z_tilde.dtype)
        else:
            z_hat = z_tilde
        z = copy * z_prev + (1 - copy) * z_hat
        tl.store(z_step_ptr + row * z_stride, z, mask=row_ok)
        z_state = z
        if HAS_MASK:
            z_state = tl.where(keep, z, z_prev)
        tl.store(z_out_ptr + row * z_stride, z_state, mask=row_ok)
        tl.store(z_hat_ptr + row * z_stride, z_hat, mask=row_ok)
        tl.store(s_z_ptr + row * z_stride, s_z, mask=row_ok)
        tl.store(up_ptr + row * up_stride + col, z * h, mask=inside)
    if not IS_BOTTOM:
        z_down = tl.load(z_down_ptr + row * z_stride, mask=row_ok, other=0.0)  # z^{l-1} after step t
        tl.store(down_ptr + row * down_stride + col, z_down * h, mask=inside)


@triton.jit
def hmlstm_backward_kernel(
        gh_ptr, gc_ptr, g_stride, gz_ptr, g_out_ptr, g_out_stride, g_bound_ptr, g_bound_stride, valid_ptr,
        da_ptr, da_stride, da_down_ptr, da_down_stride, z_down_ptr, da_up_ptr, da_up_stride,
        dzb_up_ptr, dzb_ptr, dzs_ptr, dzs_down_ptr,
        h_prev_ptr, h_after_ptr, h_stride, c_prev_ptr, c_stride,
        z_prev_ptr, z_below_ptr, z_step_ptr, z_hat_ptr, s_z_ptr, z_stride,
        act_ptr, act_stride, x_hat_ptr, x_hat_stride, rstd_ptr, norm_w_ptr,
        ds_ptr, dy_ptr, ds_stride, slope_ptr,
        B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, IS_BOTTOM: tl.constexpr, IS_TOP: tl.constexpr,
        LAYER_NORM: tl.constexpr, HAS_MASK: tl.constexpr, STRAIGHT_COPY: tl.constexpr):
    """Back-propagation through BLOCK_B rows of layer l at step t (fused.py's loop body).

    gh, gc, gz hold the gradients w.r.t. the state after step t that the element-wise work
    produced; the GEMMs' parts arrive through da (this layer's input gradient from step t+1:
    recurrent and top-down slots), da_down (the layer below's, step t+1: its top-down slot
    read h^l_t) and da_up (the layer above's, step t: its bottom-up slot read h^l_t, with
    dzb_up, the rest of d loss / d z^l_t from the layer above), and dzs (written by the layer
    above at this step: its share for z^l after step t, through this layer's top-down slot).
    On return gh, gc, gz hold the element-wise part for the state before step t, ds the
    gradient w.r.t. the raw pre-activation (for the GEMMs), dy w.r.t. the normalised one,
    dzb this layer's share for z^{l-1}_t and dzs_down its share for z^{l-1} after step t.
    STRAIGHT_COPY: core's copy_gradient="straight": on a row that COPYs exactly (copy == 1) the
    operation coefficients are constants, so the row's d_flush, d_update, d_copy are zero (no
    gradient to z_prev or z_below through the choice of operation); "mixed" keeps them, and passes
    nothing back through the z that a COPY row keeps (see core.py).
    """
    row = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]  # a column of rows
    row_ok = row < B
    col = tl.arange(0, BLOCK_H)[None, :]
    col_ok = col < H
    inside = row_ok & col_ok
    keep = tl.load(valid_ptr + row, mask=row_ok, other=0.0) if HAS_MASK else 1.0

    # the gradients w.r.t. the state after step t; a padded step passes them through
    da_row = da_ptr + row * da_stride
    gh = (tl.load(gh_ptr + row * g_stride + col, mask=inside, other=0.0)
          + keep * tl.load(g_out_ptr + row * g_out_stride + col, mask=inside, other=0.0)
          + tl.load(da_row + col, mask=inside, other=0.0))
    h_after = tl.load(h_after_ptr + row * h_stride + col, mask=inside, other=0.0)
    if not IS_BOTTOM:  # the layer below's top-down slot read z^{l-1} h^l after step t
        da_down = tl.load(da_down_ptr + row * da_down_stride + col, mask=inside, other=0.0)
        gh += tl.load(z_down_ptr + row * z_stride, mask=row_ok, other=0.0) * da_down
        tl.store(dzs_down_ptr + row, tl.sum(da_down * h_after, axis=1, keep_dims=True), mask=row_ok)
    gc = tl.load(gc_ptr + row * g_stride + col, mask=inside, other=0.0)
    dh = keep * gh
    dc = keep * gc
    if not IS_TOP:  # dzs: the layer above's share for z^l after step t, from this layer's top-down slot
        gz = (tl.load(gz_ptr + row * z_stride, mask=row_ok, other=0.0)
              + keep * tl.load(g_bound_ptr + row * g_bound_stride, mask=row_ok, other=0.0)
              + tl.load(dzs_ptr + row, mask=row_ok, other=0.0))
        da_up = tl.load(da_up_ptr + row * da_up_stride + col, mask=inside, other=0.0)
        z = tl.load(z_step_ptr + row * z_stride, mask=row_ok, other=0.0)
        dh += z * da_up
        dz = (keep * gz + tl.load(dzb_up_ptr + row, mask=row_ok, other=0.0)
              + tl.sum(da_up * h_after, axis=1, keep_dims=True))

    z_prev = 0.0 if IS_TOP else tl.load(z_prev_ptr + row * z_stride, mask=row_ok, other=0.0)
    z_below = 1.0 if IS_BOTTOM else tl.load(z_below_ptr + row * z_stride, mask=row_ok, other=0.0)
    flush, update, copy = z_prev, (1 - z_prev) * z_below, (1 - z_prev) * (1 - z_below)
    act_row = act_ptr + row * act_stride
    f = tl.load(act_row + 0 * H + col, mask=inside, other=0.0)
    i = tl.load(act_row + 1 * H + col, mask=inside, other=0.0)
    o = tl.load(act_row + 2 * H + col, mask=inside, other=0.0)
    g = tl.load(act_row + 3 * H + col, mask=inside, other=0.0)
    h_prev = tl.load(h_prev_ptr + row * h_stride + col, mask=inside, other=0.0)
    c_prev = tl.load(c_prev_ptr + row * c_stride + col, mask=inside, other=0.0)
    ig = i * g
    c = flush * ig + update * (f * c_prev + ig) + copy * c_prev  # recomputed: cheaper than saved
    tanh_c = 2 * tl.sigmoid(2 * c) - 1

    # Eq. 3: h = copy h_prev + (1 - copy) o tanh(c)
    d_copy = tl.sum(dh * (h_prev - o * tanh_c), axis=1, keep_dims=True)
    d_o_tanh = (1 - copy) * dh
    do = d_o_tanh * tanh_c
    dc = dc + d_o_tanh * o * (1 - tanh_c * tanh_c)
    # Eq. 2: c = flush i g + update (f c_prev + i g) + copy c_prev
    d_flush = tl.sum(dc * ig, axis=1, keep_dims=True)
    d_update = tl.sum(dc * (f * c_prev + ig), axis=1, keep_dims=True)
    d_copy += tl.sum(dc * c_prev, axis=1, keep_dims=True)
    d_ig = dc * (flush + update)
    df = dc * update * c_prev
    dy_f, dy_i = df * f * (1 - f), d_ig * g * i * (1 - i)
    dy_o, dy_g = do * o * (1 - o), d_ig * i * (1 - g * g)
    tl.store(gh_ptr + row * g_stride + col, (1 - keep) * gh + copy * dh, mask=inside)
    tl.store(gc_ptr + row * g_stride + col, (1 - keep) * gc + dc * (update * f + copy), mask=inside)

    if not IS_TOP:  # z = copy z_prev + (1 - copy) z_hat; z_hat straight-through: a/2 inside |a s| < 1
        s_z = tl.load(s_z_ptr + row * z_stride, mask=row_ok, other=0.0)
        slope = tl.load(slope_ptr)
        d_copy += dz * (z_prev - tl.load(z_hat_ptr + row * z_stride, mask=row_ok, other=0.0))
        window = (tl.abs(slope * s_z) < 1.0).to(s_z.dtype)
        dy_z = dz * (1 - copy) * window * (slope / 2.0)
    if STRAIGHT_COPY:  # HMLSTM.step: flush, update, copy are constants on a row where copy == 1
        computed = copy < 1
        d_flush = tl.where(computed, d_flush, 0.0)
        d_update = tl.where(computed, d_update, 0.0)
        d_copy = tl.where(computed, d_copy, 0.0)
    if not IS_TOP:
        kept = dz * copy  # the z a COPY row keeps; "mixed" passes none back through it (core.py)
        if not STRAIGHT_COPY:
            kept = kept * 0.0
        # flush = z_prev, update = (1 - z_prev) z_below, copy = (1 - z_prev)(1 - z_below)
        tl.store(gz_ptr + row * z_stride, (1 - keep) * gz + kept + d_flush - d_update * z_below
                 - d_copy * (1 - z_below), mask=row_ok)
    if not IS_BOTTOM:
        tl.store(dzb_ptr + row, (d_update - d_copy) * (1 - z_prev), mask=row_ok)

    ds_row, dy_row = ds_ptr + row * ds_stride, dy_ptr + row * ds_stride
    if LAYER_NORM:  # y = x_hat * w + b, x_hat = (s - mean) / std
        tl.store(dy_row + 0 * H + col, dy_f, mask=inside)
        tl.store(dy_row + 1 * H + col, dy_i, mask=inside)
        tl.store(dy_row + 2 * H + col, dy_o, mask=inside)
        tl.store(dy_row + 3 * H + col, dy_g, mask=inside)
        x_row = x_hat_ptr + row * x_hat_stride
        x_f = tl.load(x_row + 0 * H + col, mask=inside, other=0.0)
        x_i = tl.load(x_row + 1 * H + col, mask=inside, other=0.0)
        x_o = tl.load(x_row + 2 * H + col, mask=inside, other=0.0)
        x_g = tl.load(x_row + 3 * H + col, mask=inside, other=0.0)
        d_f = dy_f * tl.load(norm_w_ptr + 0 * H + col, mask=col_ok, other=0.0)
        d_i = dy_i * tl.load(norm_w_ptr + 1 * H + col, mask=col_ok, other=0.0)
        d_o = dy_o * tl.load(norm_w_ptr + 2 * H + col, mask=col_ok, other=0.0)
        d_g = dy_g * tl.load(norm_w_ptr + 3 * H + col, mask=col_ok, other=0.0)
        n = 4 * H
        total = tl.sum(d_f + d_i + d_o + d_g, axis=1, keep_dims=True)
        dot = tl.sum(d_f * x_f + d_i * x_i + d_o * x_o + d_g * x_g, axis=1, keep_dims=True)
        if not IS_TOP:
            tl.store(dy_row + 4 * H, dy_z, mask=row_ok)
            x_z = tl.load(x_row + 4 * H, mask=row_ok, other=0.0)
            d_z = dy_z * tl.load(norm_w_ptr + 4 * H)
            n = n + 1
            total = total + d_z
            dot = dot + d_z * x_z
        mean, mean_dot = total / n, dot / n
        rstd = tl.load(rstd_ptr + row, mask=row_ok, other=0.0)
        tl.store(ds_row + 0 * H + col, rstd * (d_f - mean - x_f * mean_dot), mask=inside)
        tl.store(ds_row + 1 * H + col, rstd * (d_i - mean - x_i * mean_dot), mask=inside)
        tl.store(ds_row + 2 * H + col, rstd * (d_o - mean - x_o * mean_dot), mask=inside)
        tl.store(ds_row + 3 * H + col, rstd * (d_g - mean - x_g * mean_dot), mask=inside)
        if not IS_TOP:
            tl.store(ds_row + 4 * H, rstd * (d_z - mean - x_z * mean_dot), mask=row_ok)
    else:
        tl.store(ds_row + 0 * H + col, dy_f, mask=inside)
        tl.store(ds_row + 1 * H + col, dy_i, mask=inside)
        tl.store(ds_row + 2 * H + col, dy_o, mask=inside)
        tl.store(ds_row + 3 * H + col, dy_g, mask=inside)
        if not IS_TOP:
            tl.store(ds_row + 4 * H, dy_z, mask=row_ok)
