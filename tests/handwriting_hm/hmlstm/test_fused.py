"""The fused training path (hmlstm/paths/fused.py) against the reference loop: outputs, final
state and every gradient, through all three operations and the straight-through boundaries."""
import pytest
import torch

from handwriting_hm.hmlstm.core import COPY, FLUSH, UPDATE, HMLSTM, HMLSTMState, operations

BATCH, STEPS, INPUT = 5, 10, 3
# the initial boundaries decide the first step's operations: every combination for three detectors
INITIAL_Z = [[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]]


def make_model(layer_norm, dtype, boundary_mode="step"):
    # seeds picked so that the boundaries exercise every operation in every layer (asserted below)
    torch.manual_seed(1 if layer_norm else 0)
    model = HMLSTM(INPUT, (6, 5, 5, 4), layer_norm=layer_norm, boundary_mode=boundary_mode)
    if layer_norm:  # gains and biases away from 1 and 0, so that their gradients are really checked
        with torch.no_grad():
            for norm in model.norms:
                norm.weight.normal_(1.0, 0.3)
                norm.bias.normal_(0.0, 0.3)
    return model.to(dtype)


def make_inputs(model, dtype):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, STEPS, INPUT, generator=generator, dtype=dtype)
    h = tuple(0.5 * torch.randn(BATCH, size, generator=generator, dtype=dtype) for size in model.hidden_sizes)
    c = tuple(torch.randn(BATCH, size, generator=generator, dtype=dtype) for size in model.hidden_sizes)
    z = torch.tensor(INITIAL_Z, dtype=dtype)
    return [t.requires_grad_() for t in (x, *h, *c, z)]


def run(model, leaves, impl, lengths=None, split=None, slope=1.5, seed=0):
    """Outputs and gradients of a loss that reads every output (hidden, boundaries, final state)."""
    model.zero_grad()
    for leaf in leaves:
        leaf.grad = None
    L = model.num_layers
    x, state = leaves[0], HMLSTMState(tuple(leaves[1:L + 1]), tuple(leaves[L + 1:2 * L + 1]), leaves[-1])
    torch.manual_seed(seed)  # Bernoulli boundaries draw from the global generator
    if split is None:
        out = model(x, state=state, lengths=lengths, slope=slope, impl=impl)
        hidden, boundaries = out.hidden, out.boundaries
    else:  # truncated BPTT's carried state, without the detach: gradients flow through it
        first = model(x[:, :split], state=state, slope=slope, impl=impl)
        out = model(x[:, split:], state=first.state, slope=slope, impl=impl)
        hidden = tuple(torch.cat(pair, dim=1) for pair in zip(first.hidden, out.hidden))
        boundaries = torch.cat([first.boundaries, out.boundaries], dim=1)
    outputs = [*hidden, boundaries, *out.state.h, *out.state.c, out.state.z]
    weights = torch.Generator().manual_seed(2)
    loss = sum((o * torch.randn(o.shape, generator=weights, dtype=o.dtype)).sum() for o in outputs)
    loss.backward()
    gradients = [p.grad for p in model.parameters()] + [leaf.grad for leaf in leaves]
    return [o.detach() for o in outputs], gradients, boundaries.detach()


def assert_relative_close(actual, expected, tolerance):
    for a, e in zip(actual, expected):
        scale = e.abs().max().clamp_min(1e-30)
        assert ((a - e).abs().max() / scale).item() < tolerance


def assert_every_operation(model, boundaries, initial_z, lengths):
    """Every valid step of the comparison covered every operation each layer can do."""
    codes = operations(boundaries, initial_z=initial_z.detach())
    valid = torch.ones(BATCH, STEPS, dtype=torch.bool) if lengths is None else (
        torch.arange(STEPS)[None] < lengths[:, None])
    done = [set(codes[:, :, l][valid].tolist()) for l in range(model.num_layers)]
    assert done[0] == {UPDATE, FLUSH} and done[-1] == {COPY, UPDATE}
    assert all(ops == {COPY, UPDATE, FLUSH} for ops in done[1:-1])


CASES = [  # (layer_norm, lengths, split)
    (False, None, None),
    (True, None, None),
    (True, [STEPS, 6, 1, 0, 8], None),
    (False, [STEPS, 3, STEPS, 8, 2], None),
    (True, None, 4),
]


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("layer_norm, lengths, split", CASES)
@pytest.mark.parametrize("copy_gradient", ["straight", "mixed"])
def test_fused_equals_reference(dtype, tolerance, layer_norm, lengths, split, copy_gradient):
    model = make_model(layer_norm, dtype)
    model.copy_gradient = copy_gradient
    leaves = make_inputs(model, dtype)
    lengths = None if lengths is None else torch.tensor(lengths)
    reference = run(model, leaves, "reference", lengths, split)
    fused = run(model, leaves, "fused", lengths, split)
    assert torch.equal(fused[2], reference[2])  # the same boundaries, hence the same operations
    assert_relative_close(fused[0], reference[0], tolerance)
    assert_relative_close(fused[1], reference[1], tolerance)

    # what the comparison covered: every operation in every layer that can do it ...
    assert_every_operation(model, reference[2], leaves[-1], lengths)
    # ... and gradients through z: the detectors' weights and the initial boundaries get some
    gradients = dict(zip([name for name, _ in model.named_parameters()], reference[1]))
    for l, size in enumerate(model.hidden_sizes[:-1]):
        assert gradients[f"recurrent.{l}.weight"][4 * size:].abs().sum() > 0
    assert reference[1][-1].abs().sum() > 0


@pytest.mark.parametrize("boundary_mode", ["bernoulli", "soft"])
def test_fused_equals_reference_with_sampled_and_soft_boundaries(boundary_mode):
    model = make_model(True, torch.float64, boundary_mode)
    leaves = make_inputs(model, torch.float64)
    reference, fused = run(model, leaves, "reference"), run(model, leaves, "fused")
    assert_relative_close(fused[0], reference[0], 1e-10)
    assert_relative_close(fused[1], reference[1], 1e-10)


def test_impl_is_chosen_in_the_constructor_and_per_call():
    torch.manual_seed(0)
    model = HMLSTM(INPUT, (4, 3), impl="fused")
    x = torch.randn(2, 3, INPUT)
    assert "Fused" in type(model(x).hidden[0].grad_fn).__name__
    assert "Fused" not in type(model(x, impl="reference").hidden[0].grad_fn).__name__
    assert "Sparse" in type(HMLSTM(INPUT, (4, 3), impl="auto")(x).hidden[0].grad_fn).__name__  # on the CPU
    with pytest.raises(ValueError, match="unknown impl"):
        HMLSTM(INPUT, (4, 3), impl="cuda")
    with pytest.raises(ValueError, match="unknown impl"):
        model(x, impl="fast")


def test_bf16_autocast_runs_and_stays_close_when_the_boundaries_agree():
    """bf16 moves pre-activations by about 1%, enough to flip a boundary near 0 and change
    everything after it; with detectors fixed (always / never firing) only rounding is left:
    within 0.01 absolute of float32 (|h| < 1; measured 0.003), gradients within 2% of their
    largest value (measured 0.7%)."""
    torch.manual_seed(0)
    model = HMLSTM(INPUT, (16, 16, 16), layer_norm=True)
    with torch.no_grad():
        for l, fire in enumerate([True, False]):
            model.recurrent[l].bias[4 * 16] = 100.0 if fire else -100.0
    x = torch.randn(4, 12, INPUT)
    results = []
    for autocast in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x, impl="fused")
            loss = sum(h.float().pow(2).sum() for h in out.hidden)
        loss.backward()
        results.append((out, [p.grad.clone() for p in model.parameters()]))
    (full, full_grads), (half, half_grads) = results
    assert torch.equal(half.boundaries, full.boundaries)
    for a, b in zip(half.hidden, full.hidden):
        assert (a.float() - b).abs().max() < 0.01
    for a, b in zip(half_grads, full_grads):
        assert torch.isfinite(a).all() and (a - b).abs().max() <= 0.02 * b.abs().max() + 1e-6
