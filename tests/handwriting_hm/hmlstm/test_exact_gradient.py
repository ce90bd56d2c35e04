"""z_on_copy="recompute" with copy_gradient="exact" against Eq. 2-9 written out here from the paper, with autograd.

The implementation below is dense: every layer computes every gate at every step, z is computed
from s_t at every step (Eq. 5-9 as written), Eq. 2 and 3 are the sums of their three cases weighted
by the boundaries, and the straight-through estimator forwards the step and backwards the hard
sigmoid's gradient. Its values and gradients are what the core must give, to float64 rounding.
"""
import pytest
import torch

from handwriting_hm.hmlstm.core import COPY, FLUSH, HMLSTM, UPDATE, make_core, operations, resolve_impl


def straight_through(s, slope):
    """Eq. 8-9: forward the step of hard_sigm(a*s); backward the hard sigmoid's gradient."""
    z_tilde = ((slope * s + 1) / 2).clamp(0, 1)
    return z_tilde + ((z_tilde > 0.5).to(s.dtype) - z_tilde).detach()


def paper_hmlstm(core, x, h0, c0, z0, slope):
    """Eq. 2-9, dense, with the core's weights. Returns per-layer h (B, T, H), z (B, T, L-1), final h, c, z."""
    L = core.num_layers
    h, c, z = list(h0), list(c0), [z0[:, l:l + 1] for l in range(L - 1)]
    hidden, boundaries = [[] for _ in range(L)], []
    for t in range(x.shape[1]):
        h_below, z_below = x[:, t], torch.ones_like(x[:, t, :1])
        new_h, new_c, new_z = [], [], []
        for l in range(L):
            size, top = core.hidden_sizes[l], l == L - 1
            z_prev = torch.zeros_like(z_below) if top else z[l]
            s = core.recurrent[l](h[l]) + z_below * core.bottom_up[l](h_below)  # Eq. 5
            if not top:
                s = s + z_prev * core.top_down[l](h[l + 1])
            if core.norms is not None:
                s = core.norms[l](s)
            f, i, o = (torch.sigmoid(s[:, k * size:(k + 1) * size]) for k in range(3))  # Eq. 6
            g = torch.tanh(s[:, 3 * size:4 * size])
            flush, update, copy = z_prev, (1 - z_prev) * z_below, (1 - z_prev) * (1 - z_below)
            c_l = flush * i * g + update * (f * c[l] + i * g) + copy * c[l]  # Eq. 2
            h_l = copy * h[l] + (1 - copy) * o * torch.tanh(c_l)  # Eq. 3
            new_h.append(h_l)
            new_c.append(c_l)
            if not top:
                z_l = straight_through(s[:, 4 * size:], slope)  # Eq. 7-9, at every step
                new_z.append(z_l)
                h_below, z_below = h_l, z_l
        h, c, z = new_h, new_c, new_z
        for l in range(L):
            hidden[l].append(h[l])
        boundaries.append(torch.cat(z, dim=1))
    return ([torch.stack(steps, 1) for steps in hidden], torch.stack(boundaries, 1), h, c, torch.cat(z, dim=1))


def scalar_of(hidden, boundaries, h, c, z, weights):
    """A random linear function of everything the forward pass returns, to backpropagate."""
    parts = [*hidden, boundaries, *h, *c, z]
    return sum((part * weight).sum() for part, weight in zip(parts, weights))


def exercised(core, B, T, seed):
    """Inputs and an initial state under which UPDATE, COPY and FLUSH all occur in layers 2 and 3 and
    layer 2 fires on a COPY step (where the recomputed z differs from a kept one), or None."""
    generator = torch.Generator().manual_seed(seed)
    sizes = core.hidden_sizes
    x = torch.randn(B, T, core.input_size, dtype=torch.float64, generator=generator)
    h0 = [torch.randn(B, n, dtype=torch.float64, generator=generator) for n in sizes]
    c0 = [torch.randn(B, n, dtype=torch.float64, generator=generator) for n in sizes]
    z0 = (torch.rand(B, len(sizes) - 1, generator=generator) < 0.5).double()
    from handwriting_hm.hmlstm.core import HMLSTMState
    with torch.no_grad():
        output = core(x, state=HMLSTMState(tuple(h0), tuple(c0), z0), slope=1.7)
    codes = operations(output.boundaries, z0)
    every_operation = all(bool((codes[..., 1:] == code).any()) for code in (COPY, UPDATE, FLUSH))
    fires_on_copy = bool(((codes[..., 1] == COPY) & (output.boundaries[..., 1] > 0.5)).any())
    return (x, h0, c0, z0) if every_operation and fires_on_copy else None


@pytest.mark.parametrize("layer_norm", [True, False])
def test_recompute_exact_equals_the_paper_with_autograd(layer_norm):
    torch.manual_seed(3)
    B, T, sizes = 5, 14, (4, 5, 3)
    core = HMLSTM(3, sizes, layer_norm=layer_norm, z_on_copy="recompute", copy_gradient="exact").double()
    with torch.no_grad():  # weights spread wide enough that the boundaries vary
        for parameter in core.parameters():
            parameter.mul_(2.5)
    found = next(filter(None, (exercised(core, B, T, seed) for seed in range(200))), None)
    assert found is not None, "no input among 200 made every operation occur"
    x, h0, c0, z0 = (found[0].requires_grad_(), [h.requires_grad_() for h in found[1]],
                     [c.requires_grad_() for c in found[2]], found[3])
    slope = 1.7

    from handwriting_hm.hmlstm.core import HMLSTMState
    output = core(x, state=HMLSTMState(tuple(h0), tuple(c0), z0), slope=slope)
    expected = paper_hmlstm(core, x, h0, c0, z0, slope)

    for got, want in zip(output.hidden, expected[0]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(output.boundaries, expected[1], rtol=0, atol=0)
    for got, want in zip((*output.state.h, *output.state.c, output.state.z), (*expected[2], *expected[3], expected[4])):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)

    weights = [torch.randn_like(part) for part in (*expected[0], expected[1], *expected[2], *expected[3], expected[4])]
    leaves = [x, *h0, *c0, *core.parameters()]
    got = torch.autograd.grad(scalar_of(output.hidden, output.boundaries, output.state.h, output.state.c,
                                        output.state.z, weights), leaves)
    want = torch.autograd.grad(scalar_of(*expected, weights), leaves)
    assert any(float(g.abs().sum()) > 0 for g in got[:1])  # the gradient reaches the input
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_recompute_gives_a_copy_row_its_own_boundary():
    """On a COPY row the recomputed z is binarise(hard_sigm(a*s)) with s = U h_{t-1} + b: with a
    large positive boundary bias every COPY row of layer 2 fires, where "keep" would leave z = 0."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3)
    kept = HMLSTM(3, (4, 4, 4), boundary_bias=5.0)
    recomputed = HMLSTM(3, (4, 4, 4), boundary_bias=5.0, z_on_copy="recompute")
    recomputed.load_state_dict(kept.state_dict())
    forced = torch.zeros(2, 6)  # layer 1 never fires, so layer 2 COPYs after its first step
    out_kept, out_recomputed = kept(x, forced_z1=forced), recomputed(x, forced_z1=forced)
    copy_rows = operations(out_kept.boundaries)[..., 1] == COPY
    assert bool(copy_rows.any())
    assert float(out_kept.boundaries.detach()[..., 1][copy_rows].max()) == 0.0
    assert float(out_recomputed.boundaries.detach()[..., 1][operations(out_recomputed.boundaries)[..., 1] == COPY].min()) == 1.0


def test_pairs_and_paths_that_do_not_go_together_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="does not go with"):
        HMLSTM(3, (4, 4), copy_gradient="exact")  # z kept: the exact derivative would double along COPY runs
    with pytest.raises(ValueError, match="does not go with"):
        make_core("hm-lstm", 3, (4, 4), z_on_copy="recompute", copy_gradient="mixed")
    with pytest.raises(ValueError, match="unknown z_on_copy"):
        HMLSTM(3, (4, 4), z_on_copy="sometimes")
    core = HMLSTM(3, (4, 4), z_on_copy="recompute", copy_gradient="exact", impl="fused")
    with pytest.raises(ValueError, match="cannot run z_on_copy='recompute'"):
        core(torch.randn(1, 2, 3))
    from handwriting_hm.hmlstm import dispatch
    if dispatch.c_loop_available():
        assert resolve_impl("auto", "cpu", "step", "exact", core.c_loop_only) == "sparse"
    assert resolve_impl("auto", "cpu", "soft", "exact", core.c_loop_only) == "reference"
    assert resolve_impl("auto", "cpu", "step", "straight") == "sparse"
    monkeypatch.setattr(dispatch, "c_loop_available", lambda: False)  # no C library: only the reference loop runs it
    assert resolve_impl("auto", "cpu", "step", "exact", core.c_loop_only) == "reference"
    with pytest.raises(ValueError, match="without the C loop"):
        resolve_impl("sparse", "cpu", "step", "exact", core.c_loop_only)


def test_boundary_unit_outside_the_layer_norm_keeps_its_raw_sum_and_bias():
    torch.manual_seed(1)
    core = HMLSTM(3, (4, 4, 4), layer_norm=True, boundary_norm=False, boundary_bias=1.5)
    assert [norm.normalized_shape for norm in core.norms] == [(16,), (16,), (16,)]
    assert float(core.recurrent[0].bias[16].detach()) == 1.5 and float(core.recurrent[1].bias[16].detach()) == 1.5
    x = torch.randn(2, 1, 3)
    output = core(x, impl="reference")
    raw = core.recurrent[0](torch.zeros(2, 4)) + core.bottom_up[0](x[:, 0])  # the zero state: no top-down
    torch.testing.assert_close(output.preactivations[:, 0, 0], raw[:, 16])
    inside = HMLSTM(3, (4, 4, 4), layer_norm=True, boundary_bias=1.5)
    assert float(inside.norms[0].bias[16].detach()) == 1.5  # inside the norm, the norm's own bias is the last term


@pytest.mark.parametrize("settings", [dict(layer_norm=True), dict(layer_norm=True, boundary_norm=False),
                                      dict(layer_norm=False)])
def test_boundary_preactivations_recomputed_from_any_path_equal_the_reference_loops(settings):
    """s_z recomputed from a fast path's output (for the firing-rate loss) equals what the reference loop
    read at each step, and so does its gradient."""
    from handwriting_hm.hmlstm.core import HMLSTMState
    torch.manual_seed(2)
    core = HMLSTM(3, (6, 5, 4), **settings)
    x = torch.randn(4, 9, 3)
    state = HMLSTMState(tuple(torch.randn(4, n) for n in (6, 5, 4)), tuple(torch.randn(4, n) for n in (6, 5, 4)),
                        torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]))
    reference = core(x, state=state, impl="reference")
    for impl in ("reference", "sparse") if core.boundary_outside_norm else ("reference", "sparse", "fused"):
        output = core(x, state=state, impl=impl)
        recomputed = core.boundary_preactivations(x, output, state)
        computed_rows = operations(reference.boundaries, state.z)[..., :-1] != COPY
        torch.testing.assert_close(recomputed[computed_rows], reference.preactivations[computed_rows],
                                   rtol=1e-5, atol=1e-5)
        grads = torch.autograd.grad((recomputed * computed_rows).square().sum(), list(core.parameters()),
                                    allow_unused=True)
        want = torch.autograd.grad((reference.preactivations * computed_rows).square().sum(),
                                   list(core.parameters()), retain_graph=True, allow_unused=True)
        for g, w in zip(grads, want):
            if w is None:
                continue
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("copy_gradient", ["straight", "mixed"])
@pytest.mark.parametrize("mode", ["step", "bernoulli"])
def test_sparse_c_loop_runs_the_boundary_unit_outside_the_norm_as_the_reference_loop(copy_gradient, mode):
    from handwriting_hm.hmlstm.core import HMLSTMState
    from handwriting_hm.hmlstm.paths.sparse_native import runs_natively
    torch.manual_seed(5)
    core = HMLSTM(3, (6, 5, 4), layer_norm=True, boundary_norm=False, boundary_bias=0.3, copy_gradient=copy_gradient)
    if not runs_natively(torch.zeros(1, 1, 3), list(core.parameters()), 3):
        pytest.skip("the C loop cannot be built here")
    with torch.no_grad():
        for norm in core.norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(6, 12, 3, requires_grad=True)
    state = HMLSTMState(tuple(torch.randn(6, n) for n in (6, 5, 4)), tuple(torch.randn(6, n) for n in (6, 5, 4)),
                        (torch.rand(6, 2) < 0.5).float())
    outputs = {}
    for impl in ("reference", "sparse"):
        torch.manual_seed(11)  # the same uniforms for Bernoulli boundaries
        output = core(x, state=state, slope=1.3, boundary_mode=mode, impl=impl)
        loss = sum((h * torch.linspace(-1, 1, h.shape[-1])).sum() for h in output.hidden) + output.state.c[2].sum()
        outputs[impl] = (output, torch.autograd.grad(loss, [x, *core.parameters()]))
    (ref, ref_grads), (fast, fast_grads) = outputs["reference"], outputs["sparse"]
    codes = operations(ref.boundaries, state.z)
    assert bool((codes[..., 1] == COPY).any()) and bool((codes[..., 1] == FLUSH).any())
    torch.testing.assert_close(fast.boundaries, ref.boundaries)
    for got, want in zip(fast.hidden, ref.hidden):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for got, want in zip(fast_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="cannot run the boundary unit outside"):
        core(x, impl="fused")


@pytest.mark.slow
@pytest.mark.parametrize("layer_norm, boundary_norm", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("copy_gradient", ["exact", "straight"])
@pytest.mark.parametrize("mode", ["step", "bernoulli"])
def test_sparse_c_loop_recomputes_z_on_copy_as_the_reference_loop(layer_norm, boundary_norm, copy_gradient, mode):
    """z_on_copy="recompute" in the C loop (s of a COPY row once per COPY run, its z at every step): values
    and every gradient as the reference loop's, with padded steps, UPDATE, COPY and FLUSH all occurring."""
    from handwriting_hm.hmlstm.core import HMLSTMState
    from handwriting_hm.hmlstm.paths.sparse_native import runs_natively
    torch.manual_seed(7)
    core = HMLSTM(3, (6, 5, 4), layer_norm=layer_norm, boundary_norm=boundary_norm, z_on_copy="recompute",
                  copy_gradient=copy_gradient)
    if not runs_natively(torch.zeros(1, 1, 3), list(core.parameters()), 3):
        pytest.skip("the C loop cannot be built here")
    with torch.no_grad():
        for parameter in core.parameters():
            parameter.mul_(1.5)
    x = torch.randn(7, 14, 3, requires_grad=True)
    h0 = tuple(torch.randn(7, n, requires_grad=True) for n in (6, 5, 4))
    c0 = tuple(torch.randn(7, n, requires_grad=True) for n in (6, 5, 4))
    state = HMLSTMState(h0, c0, (torch.rand(7, 2) < 0.5).float())
    lengths = torch.tensor([14, 9, 3, 0, 14, 11, 6])
    outputs = {}
    for impl in ("reference", "sparse"):
        torch.manual_seed(11)  # the same uniforms for Bernoulli boundaries
        output = core(x, state=state, lengths=lengths, slope=1.3, boundary_mode=mode, impl=impl)
        weights = torch.Generator().manual_seed(3)
        loss = sum((h * torch.randn(h.shape, generator=weights)).sum() for h in output.hidden)
        loss = loss + (output.boundaries * torch.randn(output.boundaries.shape, generator=weights)).sum()
        loss = loss + sum((c * torch.randn(c.shape, generator=weights)).sum() for c in output.state.c)
        loss = loss + (output.state.z * torch.randn(output.state.z.shape, generator=weights)).sum()
        outputs[impl] = (output, torch.autograd.grad(loss, [x, *h0, *c0, *core.parameters()]))
    (ref, ref_grads), (fast, fast_grads) = outputs["reference"], outputs["sparse"]
    codes = operations(ref.boundaries, state.z)[..., 1:]
    for code in (COPY, UPDATE, FLUSH):
        assert bool((codes == code).any())
    assert bool(((codes[..., 0] == COPY) & (ref.boundaries[..., 1] > 0.5)).any()), "no COPY row fired"
    torch.testing.assert_close(fast.boundaries, ref.boundaries)
    for got, want in zip((*fast.hidden, *fast.state.h, *fast.state.c, fast.state.z),
                         (*ref.hidden, *ref.state.h, *ref.state.c, ref.state.z)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for got, want in zip(fast_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("z_on_copy, copy_gradient", [("keep", "straight"), ("keep", "mixed"), ("recompute", "exact")])
def test_forced_layer_1_boundaries_run_in_the_c_loop_as_in_the_reference_loop(z_on_copy, copy_gradient):
    """The oracle: z^1 given. Layer 1's z is the given one, no gradient reaches its s_z, and the C loop's
    values and gradients are the reference loop's."""
    from handwriting_hm.hmlstm.paths.sparse_native import runs_natively
    torch.manual_seed(4)
    core = HMLSTM(3, (6, 5, 4), layer_norm=True, z_on_copy=z_on_copy, copy_gradient=copy_gradient)
    if not runs_natively(torch.zeros(1, 1, 3), list(core.parameters()), 3):
        pytest.skip("the C loop cannot be built here")
    x = torch.randn(5, 11, 3, requires_grad=True)
    forced = (torch.rand(5, 11) < 0.3).float()
    results = {}
    for impl in ("reference", "sparse"):
        output = core(x, forced_z1=forced, impl=impl)
        loss = sum((h * torch.linspace(-1, 2, h.shape[-1])).sum() for h in output.hidden)
        results[impl] = (output, torch.autograd.grad(loss, [x, *core.parameters()], allow_unused=True))
    assert torch.equal(results["sparse"][0].boundaries[..., 0], forced)
    torch.testing.assert_close(results["sparse"][0].boundaries, results["reference"][0].boundaries)
    for got, want in zip(results["sparse"][1], results["reference"][1]):
        if want is None:
            continue
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="forced_z1 must have shape"):
        core(x, forced_z1=forced[:, :3])
