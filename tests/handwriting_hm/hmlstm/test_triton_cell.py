"""The Triton path (triton_cell.py) against the reference loop: outputs, boundaries, final state
and every gradient, through all three operations, padding, carried state, every boundary mode
and both copy gradients (HMLSTM(copy_gradient="straight" | "mixed")).

Without CUDA the kernels run in Triton's interpreter on the CPU: TRITON_INTERPRET must be set
before triton_cell (hence triton_kernels) is imported, because @triton.jit reads it when it
decorates. With CUDA the same tests run the compiled kernels on the GPU.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (the test extra installs it on Linux x86-64)")
pytestmark = pytest.mark.slow  # on the CPU, Triton's interpreter

from handwriting_hm.hmlstm.core import COPY, FLUSH, GRADIENTS_FOR, UPDATE, HMLSTM, HMLSTMState, operations
from handwriting_hm.hmlstm.paths.triton_cell import hmlstm_triton, triton_available

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
COPY_GRADIENTS = GRADIENTS_FOR["keep"]  # what the Triton path runs: a COPY row keeps its z ("exact" recomputes it)
BATCH, STEPS, INPUT, SIZES = 4, 5, 2, (4, 5, 6)
# the initial boundaries decide the first step's operations: every combination for two detectors
INITIAL_Z = [[1, 0], [0, 1], [1, 1], [0, 0]]
LENGTHS = [STEPS, 4, 2, 0]
SLOPE = 1.5


def test_the_path_is_available_here():
    """Every other test needs it: fail loudly rather than skip if the interpreter was not set."""
    assert triton_available(DEVICE)


def make_model(layer_norm, dtype, detectors="mixed", copy_gradient="straight"):
    """detectors: "mixed" (as initialised), or "always" / "never" (every detector's bias forced)."""
    torch.manual_seed(3 if layer_norm else 4)  # seeds whose boundaries do every operation (asserted)
    model = HMLSTM(INPUT, SIZES, layer_norm=layer_norm, copy_gradient=copy_gradient)
    with torch.no_grad():
        if layer_norm:  # gains and biases away from 1 and 0, so that their gradients are really checked
            for norm in model.norms:
                norm.weight.normal_(1.0, 0.3)
                norm.bias.normal_(0.0, 0.3)
        if detectors != "mixed":  # the boundary's last additive term: after the norm if there is one
            for l, size in enumerate(SIZES[:-1]):
                bias = model.norms[l].bias if layer_norm else model.recurrent[l].bias
                bias[4 * size] = 20.0 if detectors == "always" else -20.0
    return model.to(device=DEVICE, dtype=dtype)


def make_leaves(dtype):
    generator = torch.Generator().manual_seed(1)  # drawn in float64 and rounded: the same in both dtypes
    x = torch.randn(BATCH, STEPS, INPUT, generator=generator, dtype=torch.float64)
    h = [0.5 * torch.randn(BATCH, size, generator=generator, dtype=torch.float64) for size in SIZES]
    c = [torch.randn(BATCH, size, generator=generator, dtype=torch.float64) for size in SIZES]
    z = torch.tensor(INITIAL_Z, dtype=torch.float64)
    return [t.to(device=DEVICE, dtype=dtype).requires_grad_() for t in (x, *h, *c, z)]


def run(model, leaves, impl, mode="step", lengths=None, split=None, seed=0, slope=SLOPE, **triton_options):
    """Outputs and every gradient of a loss that reads every output; impl "reference" or "triton"."""
    model.zero_grad()
    for leaf in leaves:
        leaf.grad = None
    L = model.num_layers
    x, state = leaves[0], HMLSTMState(tuple(leaves[1:L + 1]), tuple(leaves[L + 1:2 * L + 1]), leaves[-1])
    mask = None if lengths is None else torch.arange(STEPS, device=DEVICE)[None] < torch.tensor(
        lengths, device=DEVICE)[:, None]

    def forward(x, state, mask):
        if impl == "reference":
            return model(x, state=state, mask=mask, slope=slope, boundary_mode=mode, impl="reference")
        return hmlstm_triton(model, x, state, mask, slope, mode, **triton_options)

    torch.manual_seed(seed)  # Bernoulli uniforms come from the global generator
    if split is None:
        out = forward(x, state, mask)
        hidden, boundaries = out.hidden, out.boundaries
    else:  # truncated BPTT's carried state, without the detach: gradients flow through it
        first = forward(x[:, :split], state, None)
        out = forward(x[:, split:], first.state, None)
        hidden = tuple(torch.cat(pair, dim=1) for pair in zip(first.hidden, out.hidden))
        boundaries = torch.cat([first.boundaries, out.boundaries], dim=1)
    outputs = [*hidden, boundaries, *out.state.h, *out.state.c, out.state.z]
    weights = torch.Generator().manual_seed(2)
    loss = sum((o * torch.randn(o.shape, generator=weights, dtype=o.dtype).to(DEVICE)).sum() for o in outputs)
    loss.backward()
    gradients = [p.grad.clone() for p in model.parameters()] + [leaf.grad.clone() for leaf in leaves]
    return [o.detach() for o in outputs], gradients, boundaries.detach()


def assert_relative_close(actual, expected, tolerance):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        scale = e.abs().max().clamp_min(1e-30)
        assert ((a - e).abs().max() / scale).item() < tolerance


def assert_every_operation(boundaries, lengths):
    """UPDATE and FLUSH in layer 1, all three in the middle, COPY and UPDATE on top (valid steps)."""
    codes = operations(boundaries.cpu(), initial_z=torch.tensor(INITIAL_Z, dtype=boundaries.dtype))
    valid = torch.ones(BATCH, STEPS, dtype=torch.bool) if lengths is None else (
        torch.arange(STEPS)[None] < torch.tensor(lengths)[:, None])
    done = [set(codes[:, :, l][valid].tolist()) for l in range(len(SIZES))]
    assert done == [{UPDATE, FLUSH}, {COPY, UPDATE, FLUSH}, {COPY, UPDATE}]


TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
CASES = [  # dtype, layer_norm, lengths, split: each with mixed boundaries, every operation asserted
    (torch.float64, True, LENGTHS, None),
    (torch.float64, False, None, None),
    (torch.float32, True, LENGTHS, None),
    (torch.float32, False, None, 2),
]


def other_copy_gradient(model):
    """The model's copy gradient is the one under test: the other one's reference gradients differ."""
    return next(name for name in COPY_GRADIENTS if name != model.copy_gradient)


def assert_copy_gradient_matters(model, leaves, reference, **options):
    """The case has a COPY row whose choice gets gradient in "mixed": so the flag is really tested."""
    copy_gradient = model.copy_gradient
    model.copy_gradient = other_copy_gradient(model)
    try:
        other = run(model, leaves, "reference", **options)
    finally:
        model.copy_gradient = copy_gradient
    assert torch.equal(other[2], reference[2])
    assert any(not torch.equal(a, b) for a, b in zip(other[1], reference[1]))


@pytest.mark.parametrize("copy_gradient", COPY_GRADIENTS)
@pytest.mark.parametrize("dtype, layer_norm, lengths, split", CASES)
def test_triton_equals_reference(dtype, layer_norm, lengths, split, copy_gradient):
    model = make_model(layer_norm, dtype, copy_gradient=copy_gradient)
    leaves = make_leaves(dtype)
    reference = run(model, leaves, "reference", lengths=lengths, split=split)
    triton = run(model, leaves, "triton", lengths=lengths, split=split)
    assert_copy_gradient_matters(model, leaves, reference, lengths=lengths, split=split)
    assert torch.equal(triton[2], reference[2])  # the same boundaries, hence the same operations
    assert_relative_close(triton[0], reference[0], TOLERANCE[dtype])
    assert_relative_close(triton[1], reference[1], TOLERANCE[dtype])
    assert_every_operation(reference[2], lengths)
    # gradients went through z: the detectors' weights and the initial boundaries got some
    gradients = dict(zip([name for name, _ in model.named_parameters()], reference[1]))
    for l, size in enumerate(SIZES[:-1]):
        assert gradients[f"recurrent.{l}.weight"][4 * size:].abs().sum() > 0
    assert reference[1][-1].abs().sum() > 0


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_a_slope_tensor_gives_what_the_same_slope_as_a_number_gives(impl):
    """A training step replayed from a CUDA graph passes the slope as a tensor (core.Slope), refilled
    before each replay: the kernels must read it, forward and backward, where they read the number."""
    model = make_model(True, torch.float64)
    leaves = make_leaves(torch.float64)
    number = run(model, leaves, impl, lengths=LENGTHS)
    tensor = run(model, leaves, impl, lengths=LENGTHS, slope=torch.tensor([SLOPE], dtype=torch.float64, device=DEVICE))
    other = run(model, leaves, impl, lengths=LENGTHS, slope=SLOPE / 3)
    for a, b in zip(number[0] + number[1], tensor[0] + tensor[1]):
        assert torch.equal(a, b)
    # the slope changes the straight-through gradients (a/2 inside |a s| < 1), so the test can fail
    assert any(not torch.equal(a, b) for a, b in zip(number[1], other[1]))


@pytest.mark.parametrize("layer_norm, detectors, copy_gradient", [
    (True, "always", "straight"), (True, "always", "mixed"), (False, "never", "straight"), (False, "never", "mixed")])
def test_triton_equals_reference_with_forced_boundaries(layer_norm, detectors, copy_gradient):
    """Every detector fires at every step (layer 1 FLUSHes, the others never COPY: no COPY row,
    so both copy gradients give the same gradients) or never (layer 2 and up COPY after their
    first step), with padding."""
    model = make_model(layer_norm, torch.float32, detectors, copy_gradient)
    leaves = make_leaves(torch.float32)
    reference = run(model, leaves, "reference", lengths=LENGTHS)
    triton = run(model, leaves, "triton", lengths=LENGTHS)
    fired = reference[2][torch.arange(STEPS)[None] < torch.tensor(LENGTHS)[:, None]]
    assert bool((fired == (1.0 if detectors == "always" else 0.0)).all())
    if detectors == "never":
        assert_copy_gradient_matters(model, leaves, reference, lengths=LENGTHS)
    assert torch.equal(triton[2], reference[2])
    assert_relative_close(triton[0], reference[0], 1e-5)
    assert_relative_close(triton[1], reference[1], 1e-5)


@pytest.mark.parametrize("copy_gradient", COPY_GRADIENTS)
def test_soft_boundaries_equal_reference(copy_gradient):
    """Soft z: copy = (1 - z_prev)(1 - z_below) is 1 only where both are exactly 0 (a hard
    sigmoid clamped at 0), so "straight" detaches only such rows; the rest keep the full gradient."""
    model = make_model(True, torch.float64, copy_gradient=copy_gradient)
    leaves = make_leaves(torch.float64)
    reference, triton = run(model, leaves, "reference", "soft"), run(model, leaves, "triton", "soft")
    assert ((reference[2] > 0) & (reference[2] < 1)).any()  # some boundaries really are soft
    assert (reference[2] == 0).any()  # and some clamped at 0: exact COPY rows
    assert_copy_gradient_matters(model, leaves, reference, mode="soft")
    assert_relative_close(triton[0], reference[0], 1e-10)
    assert_relative_close(triton[1], reference[1], 1e-10)


def rng_state():
    return torch.cuda.get_rng_state() if DEVICE.type == "cuda" else torch.get_rng_state()


@pytest.mark.parametrize("copy_gradient", COPY_GRADIENTS)
def test_bernoulli_boundaries_draw_what_the_reference_draws(copy_gradient):
    """The reference draws torch.rand_like(z~) (B, 1) per step and detector layer; the Triton path
    makes the same torch.rand(B, 1) calls up front, in the same order (step t, then layer l). With
    the same seed both give the same samples, outputs and gradients, and use up the global
    generator alike (the same state afterwards)."""
    model = make_model(True, torch.float64, copy_gradient=copy_gradient)
    leaves = make_leaves(torch.float64)
    reference = run(model, leaves, "reference", "bernoulli", lengths=LENGTHS, seed=5)
    after_reference = rng_state()
    triton = run(model, leaves, "triton", "bernoulli", lengths=LENGTHS, seed=5)
    assert torch.equal(rng_state(), after_reference)
    assert torch.equal(triton[2], reference[2])
    assert set(reference[2].unique().tolist()) == {0.0, 1.0}
    assert_relative_close(triton[0], reference[0], 1e-10)
    assert_relative_close(triton[1], reference[1], 1e-10)
    assert_copy_gradient_matters(model, leaves, reference, mode="bernoulli", lengths=LENGTHS, seed=5)
    other_seed = run(model, leaves, "reference", "bernoulli", lengths=LENGTHS, seed=6)
    assert not torch.equal(other_seed[2], reference[2])  # the samples really depend on the draws


def test_bf16_matmuls_stay_close_when_the_boundaries_agree():
    """bf16 GEMMs move pre-activations by about 1%: with the detectors forced only rounding is
    left (the bounds are test_fused's for autocast). Under autocast the GEMMs take its dtype."""
    model = make_model(True, torch.float32, "always")
    leaves = make_leaves(torch.float32)
    full = run(model, leaves, "reference")
    half = run(model, leaves, "triton", matmul_dtype=torch.bfloat16)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        autocast = run(model, leaves, "triton")
    for a, b in zip(autocast[0] + autocast[1], half[0] + half[1]):
        assert torch.equal(a, b)
    assert torch.equal(half[2], full[2])
    for a, b in zip(half[0], full[0]):
        assert a.dtype == torch.float32 and (a - b).abs().max() < 0.01
    for a, b in zip(half[1], full[1]):
        assert torch.isfinite(a).all() and (a - b).abs().max() <= 0.02 * b.abs().max() + 1e-6


def test_a_1024_wide_layer():
    """H = 1024: a layer's pre-activation is 4097 wide, the kernels' tiles 1024 lanes per gate."""
    torch.manual_seed(0)
    model = HMLSTM(INPUT, (1024, 3), layer_norm=True).to(DEVICE)
    x = torch.randn(2, 2, INPUT, device=DEVICE, requires_grad=True)
    results = []
    for impl in ("reference", "triton"):
        model.zero_grad()
        x.grad = None
        state = model.initial_state(2)
        out = model(x, state=state, slope=SLOPE) if impl == "reference" else hmlstm_triton(
            model, x, state, None, SLOPE, "step")
        sum((h * torch.linspace(-1, 1, h.shape[-1], device=DEVICE)).sum() for h in out.hidden).backward()
        results.append(([*out.hidden, out.boundaries], [p.grad.clone() for p in model.parameters()] + [x.grad]))
    assert_relative_close(results[1][0], results[0][0], 1e-5)
    assert_relative_close(results[1][1], results[0][1], 1e-5)


UNAVAILABLE = """
import sys, torch
from handwriting_hm.hmlstm.core import HMLSTM
from handwriting_hm.hmlstm.paths import triton_cell
assert not triton_cell.triton_available("cpu")
model = HMLSTM(2, (3, 3))
try:
    triton_cell.hmlstm_triton(model, torch.zeros(1, 2, 2), model.initial_state(1), None, 1.0, "step")
except RuntimeError as error:
    assert "triton_available" in str(error)
else:
    raise AssertionError("ran without a device")
for name in ("handwriting_hm.hmlstm.paths.triton_cell", "handwriting_hm.hmlstm.paths.triton_kernels"):
    del sys.modules[name]
sys.modules["triton"] = None  # as if triton were not installed
from handwriting_hm.hmlstm.paths import triton_cell
assert not triton_cell.triton_available("cpu") and not triton_cell.triton_available("cuda")
"""


def test_unavailable_without_the_interpreter_on_the_cpu():
    """A plain CPU process (no TRITON_INTERPRET), and one without triton: the path says it cannot
    run, and calling it anyway raises a clear error rather than crashing."""
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    environment["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run([sys.executable, "-c", UNAVAILABLE], env=environment, cwd=Path(__file__).resolve().parents[3],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
