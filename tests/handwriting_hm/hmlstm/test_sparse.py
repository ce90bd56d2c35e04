"""The sparse training path (hmlstm/paths/sparse.py) against the reference loop with either copy gradient:
outputs, final state and every gradient, through all three operations in every layer, step and
Bernoulli boundaries, layer norm on and off, padding and carried state; and the fused path against
the reference with both copy gradients."""
import pytest
import torch

from handwriting_hm.hmlstm.core import HMLSTM, resolve_impl
from tests.handwriting_hm.hmlstm.test_fused import (CASES, STEPS, assert_every_operation, assert_relative_close,
                                                    make_inputs, make_model, run)

@pytest.mark.parametrize("copy_gradient", ["straight", "mixed"])
@pytest.mark.parametrize("boundary_mode", ["step", "bernoulli"])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("layer_norm, lengths, split", CASES)
def test_sparse_equals_reference(copy_gradient, boundary_mode, dtype, tolerance, layer_norm, lengths, split):
    model = make_model(layer_norm, dtype, boundary_mode)
    model.copy_gradient = copy_gradient
    leaves = make_inputs(model, dtype)
    lengths = None if lengths is None else torch.tensor(lengths)
    reference = run(model, leaves, "reference", lengths, split)
    sparse = run(model, leaves, "sparse", lengths, split)
    assert torch.equal(sparse[2], reference[2])  # the same boundaries (Bernoulli: the same draws)
    assert_relative_close(sparse[0], reference[0], tolerance)
    assert_relative_close(sparse[1], reference[1], tolerance)
    assert_every_operation(model, reference[2], leaves[-1], lengths)


def test_copy_gradients_differ_only_in_the_gradient():
    """"straight" and "mixed" give the same outputs; their gradients differ (else the tests above
    could not tell a sparse path that recomputes COPY rows from one that skips them)."""
    model = make_model(True, torch.float64)
    leaves = make_inputs(model, torch.float64)
    straight = run(model, leaves, "reference")
    model.copy_gradient = "mixed"
    mixed = run(model, leaves, "reference")
    assert_relative_close(straight[0], mixed[0], 1e-12)
    assert max((a - b).abs().max().item() for a, b in zip(straight[1], mixed[1])) > 1e-3


@pytest.mark.parametrize("copy_gradient", ["straight", "mixed"])
@pytest.mark.parametrize("boundary_mode", ["step", "bernoulli", "soft"])
def test_fused_equals_reference_with_either_copy_gradient(copy_gradient, boundary_mode):
    model = make_model(True, torch.float64, boundary_mode)
    model.copy_gradient = copy_gradient
    leaves = make_inputs(model, torch.float64)
    lengths = torch.tensor([STEPS, 6, 1, 0, 8])
    reference, fused = run(model, leaves, "reference", lengths), run(model, leaves, "fused", lengths)
    assert_relative_close(fused[0], reference[0], 1e-10)
    assert_relative_close(fused[1], reference[1], 1e-10)


def test_sparse_needs_binary_boundaries_and_auto_picks_what_can_run():
    torch.manual_seed(0)
    model = HMLSTM(3, (4, 3), boundary_mode="soft")
    x = torch.randn(2, 3, 3)
    with pytest.raises(ValueError, match="binary boundaries"):
        model(x, impl="sparse")
    cpu = torch.device("cpu")
    assert resolve_impl("auto", cpu, "step", "straight") == "sparse"
    assert resolve_impl("auto", cpu, "bernoulli", "straight") == "sparse"
    assert resolve_impl("auto", cpu, "soft", "straight") == "fused"
    assert resolve_impl("auto", cpu, "step", "mixed") == "sparse"
    assert "Sparse" in type(HMLSTM(3, (4, 3), impl="auto")(x).hidden[0].grad_fn).__name__
    assert "Fused" in type(model(x, impl="auto").hidden[0].grad_fn).__name__


def test_sparse_under_cpu_autocast_computes_in_float32():
    torch.manual_seed(0)
    model = HMLSTM(3, (6, 5, 4), layer_norm=True)
    x = torch.randn(3, 7, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model(x, impl="sparse")
    plain = model(x, impl="sparse")
    assert all(torch.equal(a, b) for a, b in zip(autocast.hidden, plain.hidden))
