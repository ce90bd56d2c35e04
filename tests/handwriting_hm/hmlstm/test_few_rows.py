"""The few-row C kernel (hmlstm/csrc/few_rows.c) against torch's product, and its fallback to torch."""
import ctypes
import shutil

import pytest
import torch

from handwriting_hm.hmlstm.paths import few_rows

needs_compiler = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None or torch.backends.cpu.get_cpu_capability()
    not in ("AVX2", "AVX512"), reason="the kernel needs a C compiler and an AVX2 CPU")


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """kernel() built anew into a temporary cache folder, and forgotten afterwards."""
    monkeypatch.setenv("HANDWRITING_HM_CACHE", str(tmp_path))
    monkeypatch.delenv("HANDWRITING_HM_NO_C_KERNEL", raising=False)
    few_rows.library.cache_clear()
    few_rows.kernel.cache_clear()
    yield tmp_path
    monkeypatch.undo()  # a test's own patches of few_rows.kernel first
    few_rows.library.cache_clear()
    few_rows.kernel.cache_clear()


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m, n, k", [(1, 1601, 400), (2, 5, 13), (3, 1601, 400), (5, 7, 3), (8, 400, 1601),
                                     (9, 4, 8), (16, 1601, 400)])
def test_kernel_equals_torch_product(fresh_kernel, threads, m, n, k):
    """Every shape the blocks and tails cover: odd rows, columns not a multiple of 4, k not of 8."""
    torch.manual_seed(m * 1000 + n + k)
    x, weight = torch.randn(m, k), torch.randn(n, k)
    y = torch.full((m, n), float("nan"))
    function = few_rows.kernel()
    assert function is not None
    function(x.data_ptr(), weight.data_ptr(), y.data_ptr(), m, n, k, threads)
    torch.testing.assert_close(y, x @ weight.t(), rtol=1e-5, atol=1e-5 * k ** 0.5)
    assert list(fresh_kernel.glob("handwriting_hm-*.so"))  # built into the cache folder given


@pytest.fixture(scope="module")
def tile_products(tmp_path_factory):
    """few_rows.c's tile_product as built for each capability this CPU has: AVX2, and AVX-512 where it has it."""
    capabilities = ["AVX2"] + (["AVX512"] if torch.backends.cpu.get_cpu_capability() == "AVX512" else [])
    folder, products = tmp_path_factory.mktemp("tiles"), {}
    with pytest.MonkeyPatch.context() as patch:
        for capability in capabilities:
            patch.setattr(torch.backends.cpu, "get_cpu_capability", lambda capability=capability: capability)
            function = ctypes.CDLL(str(few_rows.build(folder))).tile_product
            function.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int] * 2
            products[capability] = function
    return products


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m, n, k", [(1, 37, 21), (3, 1601, 400), (5, 400, 1601), (7, 33, 5), (8, 16, 9),
                                     (13, 65, 40), (32, 1601, 400)])
def test_tile_product_equals_torch_product(tile_products, threads, m, n, k):
    """The C loop's tiles, y = x wt and y += x wt: six rows and the tiles that even out a remainder, whole
    strips and the masked last one, with AVX2 and (where the CPU has it) AVX-512; nothing past y is written."""
    torch.manual_seed(m * 1000 + n + k)
    x, wt = torch.randn(m, k), torch.randn(k, n)
    expected = x @ wt
    for capability, function in tile_products.items():
        for accumulate in (0, 1):
            buffer = torch.randn(m * n + 64)
            start = buffer.clone()
            function(x.data_ptr(), wt.data_ptr(), buffer.data_ptr(), m, n, k, threads, accumulate)
            y = buffer[:m * n].view(m, n)
            torch.testing.assert_close(y, expected + start[:m * n].view(m, n) * accumulate, rtol=1e-5,
                                       atol=1e-5 * k ** 0.5, msg=lambda text: f"{capability}: {text}")
            assert torch.equal(buffer[m * n:], start[m * n:])


@needs_compiler
def test_times_transposed_takes_the_kernel_for_few_float32_rows(fresh_kernel, monkeypatch):
    calls = []
    function = few_rows.kernel()
    x, weight = torch.randn(3, 40), torch.randn(50, 40)
    many = torch.randn(few_rows.FEW_ROWS_PER_THREAD * torch.get_num_threads() + 1, 40)
    with monkeypatch.context() as patch:
        patch.setattr(few_rows, "kernel", lambda: lambda *args: (calls.append(args[3]), function(*args)))
        torch.testing.assert_close(few_rows.times_transposed(x, weight), x @ weight.t())
        torch.testing.assert_close(few_rows.times_transposed(x.t().contiguous().t(), weight), x @ weight.t())
        assert torch.equal(few_rows.times_transposed(many, weight), many @ weight.t())  # too many rows: torch's
        assert torch.equal(few_rows.times_transposed(x.double(), weight.double()), x.double() @ weight.double().t())
        leaf = x.clone().requires_grad_()
        assert few_rows.times_transposed(leaf, weight).grad_fn is not None  # autograd needs torch's product
    assert calls == [3, 3]  # the two float32 products of 3 rows, strided x included


def test_without_the_kernel_it_is_torch_and_says_why(fresh_kernel, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.warns(UserWarning, match="C kernels are unavailable"):
        assert few_rows.kernel() is None
    x, weight = torch.randn(2, 6), torch.randn(5, 6)
    assert torch.equal(few_rows.times_transposed(x, weight), x @ weight.t())
    few_rows.library.cache_clear()
    few_rows.kernel.cache_clear()
    monkeypatch.setenv("HANDWRITING_HM_NO_C_KERNEL", "1")
    assert few_rows.kernel() is None and not few_rows.available_for(x)


@needs_compiler
def test_sparse_path_through_the_kernel_equals_reference(fresh_kernel, monkeypatch):
    """sparse.py's Python loop (where the C loop of sparse_native.py cannot run) through the kernel."""
    from handwriting_hm.hmlstm.paths import sparse
    from tests.handwriting_hm.hmlstm.test_fused import assert_relative_close, make_inputs, make_model, run

    function, rows = few_rows.kernel(), []
    monkeypatch.setattr(few_rows, "kernel", lambda: lambda *args: (rows.append(args[3]), function(*args)))
    monkeypatch.setattr(sparse, "runs_natively", lambda *args: False)
    model = make_model(True, torch.float32, "step")
    leaves = make_inputs(model, torch.float32)
    lengths = torch.tensor([7, 3, 8, 1, 5])
    reference, sparse = run(model, leaves, "reference", lengths), run(model, leaves, "sparse", lengths)
    assert rows and max(rows) <= few_rows.FEW_ROWS_PER_THREAD * torch.get_num_threads()
    assert_relative_close(sparse[0], reference[0], 1e-5)
    assert_relative_close(sparse[1], reference[1], 1e-5)


def test_auto_says_whether_the_c_loop_runs(fresh_kernel, monkeypatch):
    from handwriting_hm.hmlstm.core import impl_choice

    monkeypatch.setenv("HANDWRITING_HM_NO_C_KERNEL", "1")
    path, why = impl_choice("auto", "cpu", "step")
    assert path == "sparse" and why.endswith("its Python loop through torch's products (the C library is unavailable)")
    if needs_compiler.args[0]:  # no compiler here: nothing more to check
        return
    monkeypatch.delenv("HANDWRITING_HM_NO_C_KERNEL")
    few_rows.library.cache_clear()
    few_rows.kernel.cache_clear()
    for mode, copy_gradient in (("step", "straight"), ("bernoulli", "mixed")):
        assert impl_choice("auto", "cpu", mode, copy_gradient)[1].endswith(
            "its time loop in C for float32 (sparse_loop.c)")
