"""The sparse path's C loop (hmlstm/paths/sparse_native.py, csrc/sparse_loop.c) against the reference loop and
against sparse.py's Python loop, at sizes where its vectorised loops and the few-row products run
their full blocks, with one and two threads; and where it runs and where it does not (a ctypes mirror that
does not fit the C struct included)."""
import ctypes

import pytest
import torch

from handwriting_hm.hmlstm.paths import few_rows, sparse, sparse_native
from handwriting_hm.hmlstm.core import HMLSTM, HMLSTMState
from tests.handwriting_hm.hmlstm.test_fused import assert_relative_close, run
from tests.handwriting_hm.hmlstm.test_few_rows import needs_compiler

SIZES = (40, 24, 17)  # 4H + 1 = 161, 97, 68: whole blocks of eight and tails


def make_case(layer_norm: bool, boundary_mode: str, seed: int):
    torch.manual_seed(seed)
    model = HMLSTM(3, SIZES, layer_norm=layer_norm, boundary_mode=boundary_mode)
    x = torch.randn(7, 12, 3)
    h0 = tuple(torch.randn(7, size) for size in SIZES)
    c0 = tuple(torch.randn(7, size) for size in SIZES)
    z0 = torch.bernoulli(torch.full((7, len(SIZES) - 1), 0.5))
    return model, [leaf.requires_grad_() for leaf in (x, *h0, *c0, z0)]


@pytest.fixture
def counted(monkeypatch):
    """How many times the C loop ran forward."""
    calls = []
    forward = sparse_native.SparseLoopHMLSTM.forward
    monkeypatch.setattr(sparse_native.SparseLoopHMLSTM, "forward",
                        staticmethod(lambda *args: (calls.append(1), forward(*args))[1]))
    return calls


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("copy_gradient", ["straight", "mixed"])
@pytest.mark.parametrize("boundary_mode", ["step", "bernoulli"])
@pytest.mark.parametrize("layer_norm, lengths", [(True, None), (False, [12, 5, 1, 0, 12, 9, 3]),
                                                 (True, [12, 5, 1, 0, 12, 9, 3])])
def test_c_loop_equals_reference_and_python_loop(counted, monkeypatch, threads, copy_gradient, boundary_mode,
                                                 layer_norm, lengths):
    model, leaves = make_case(layer_norm, boundary_mode, seed=3)
    model.copy_gradient = copy_gradient
    lengths = None if lengths is None else torch.tensor(lengths)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reference = run(model, leaves, "reference", lengths)
        native = run(model, leaves, "sparse", lengths)
        assert counted, "the C loop did not run"
        with monkeypatch.context() as patch:
            patch.setattr(sparse, "runs_natively", lambda *args: False)
            python = run(model, leaves, "sparse", lengths)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(native[2], reference[2]) and torch.equal(native[2], python[2])
    counts = torch.stack([native[2][..., l].flatten() for l in range(len(SIZES) - 1)])
    assert (counts > 0.5).any(dim=1).all() and (counts < 0.5).any(dim=1).all()  # boundaries fire and stay off
    for got in (native, python):
        assert_relative_close(got[0], reference[0], 1e-5)
        assert_relative_close(got[1], reference[1], 1e-5)


@needs_compiler
def test_c_loop_runs_only_where_it_can(counted, monkeypatch):
    model, leaves = make_case(True, "step", seed=0)
    run(model, leaves, "sparse")
    assert len(counted) == 1
    double = model.double()  # float64 runs the Python loop
    run(double, [leaf.detach().double().requires_grad_() for leaf in leaves], "sparse")
    assert len(counted) == 1
    model.float()
    monkeypatch.setenv("HANDWRITING_HM_NO_C_KERNEL", "1")
    few_rows.library.cache_clear()
    try:
        assert not sparse_native.runs_natively(leaves[0], list(model.parameters()), 3)
        run(model, leaves, "sparse")
        assert len(counted) == 1
    finally:
        monkeypatch.delenv("HANDWRITING_HM_NO_C_KERNEL")
        few_rows.library.cache_clear()


@needs_compiler
def test_the_ctypes_mirror_fits_the_c_struct_and_one_that_does_not_falls_back_to_python(counted, monkeypatch):
    size = few_rows.function("sparse_loop_struct_size", [], ctypes.c_size_t)()
    assert size == ctypes.sizeof(sparse_native._Loop)

    class Drifted(ctypes.Structure):  # a field short, as if hmlstm.h had gained one
        _fields_ = sparse_native._Loop._fields_[:-1]

    model, leaves = make_case(True, "step", seed=0)
    monkeypatch.setattr(sparse_native, "_Loop", Drifted)
    sparse_native._mirror_fits.cache_clear()
    try:
        with pytest.warns(UserWarning, match="ctypes mirror"):
            assert not sparse_native.runs_natively(leaves[0], list(model.parameters()), 3)
        run(model, leaves, "sparse")
        assert not counted
    finally:
        sparse_native._mirror_fits.cache_clear()


@needs_compiler
@pytest.mark.parametrize("copy_gradient", ["straight", "mixed"])
@pytest.mark.parametrize("boundary_mode", ["step", "bernoulli"])
def test_without_gradients_the_c_loop_keeps_one_step_and_gives_the_same_outputs(counted, monkeypatch, copy_gradient,
                                                                                 boundary_mode):
    """Under no_grad (evaluation, sampling) the C loop keeps one step of what the backward pass would read,
    rewritten at every step: the outputs are the training pass's, bit for bit."""
    kept_steps, set_field = [], sparse_native._set
    monkeypatch.setattr(sparse_native, "_set", lambda loop, name, values: (
        kept_steps.append(values[0].shape[0]) if name == "activations" else None, set_field(loop, name, values)))
    model, leaves = make_case(True, boundary_mode, seed=5)
    model.copy_gradient = copy_gradient
    lengths = torch.tensor([12, 5, 1, 0, 12, 9, 3])
    state = HMLSTMState(tuple(leaves[1:4]), tuple(leaves[4:7]), leaves[7])
    torch.manual_seed(0)
    training = model(leaves[0], state=state, lengths=lengths, slope=1.5, impl="sparse")
    torch.manual_seed(0)
    with torch.no_grad():
        evaluating = model(leaves[0], state=state, lengths=lengths, slope=1.5, impl="sparse")
    assert len(counted) == 2 and kept_steps == [12, 1]
    assert torch.equal(training.boundaries, evaluating.boundaries)
    for a, b in zip((*training.hidden, *training.state.h, *training.state.c),
                    (*evaluating.hidden, *evaluating.state.h, *evaluating.state.c)):
        assert torch.equal(a, b)
