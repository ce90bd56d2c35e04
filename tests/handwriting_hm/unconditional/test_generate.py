"""The COPY-skipping sampler: the reference's results, without the reference's work."""
import pytest
import torch
import torch.nn.functional as F

from handwriting_hm.hmlstm.core import COPY, FLUSH, UPDATE
from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel
from handwriting_hm.hmlstm.stepper import few_row_linear
from handwriting_hm.unconditional.generate import generate, generate_reference

N_POINTS = 60


def small_model(cell="hm-lstm", layer_norm=True, boundary_mode="step", seed=0):
    torch.manual_seed(seed)
    config = HandwritingConfig(cell=cell, hidden_sizes=(16, 12, 8), embedding_size=10, n_mixtures=3,
                               layer_norm=layer_norm, boundary_mode=boundary_mode)
    return HandwritingModel(config).eval()


def both(model, n_samples, **kwargs):
    """The reference and the fast sampler, each with its own generator seeded alike."""
    return [sampler(model, N_POINTS, n_samples, generator=torch.Generator().manual_seed(7), **kwargs)
            for sampler in (generate_reference, generate)]


def never_fire(model):
    """Detectors that never fire: layer 1 UPDATEs at every step, every layer above COPYs."""
    with torch.no_grad():
        for l in range(model.core.num_detectors):
            size = model.core.hidden_sizes[l]
            for linear in (model.core.recurrent[l], model.core.top_down[l], model.core.bottom_up[l]):
                linear.weight[4 * size:].zero_()
            model.core.recurrent[l].bias[4 * size] = -100.0


@pytest.mark.parametrize("cell", ["hm-lstm", "lstm"])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_one_sample_equals_the_reference_bit_for_bit(cell, layer_norm):
    model = small_model(cell, layer_norm)
    reference, fast = both(model, 1, bias=0.5, temperature=0.8, slope=1.5)
    for name in reference._fields:
        assert torch.equal(getattr(fast, name), getattr(reference, name)), name


@pytest.mark.parametrize("cell", ["hm-lstm", "lstm"])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_a_batch_equals_the_reference(cell, layer_norm):
    """Rows that COPY are left out of the products, so a product has fewer rows than the
    reference's, and its sums may round differently: in float64 the points agree to 1e-10 and
    every boundary and operation is the same."""
    model = small_model(cell, layer_norm).double()
    reference, fast = both(model, 4, bias=0.5, temperature=0.8, slope=1.5)
    for name in ("boundaries", "operations", "counts"):
        assert torch.equal(getattr(fast, name), getattr(reference, name)), name
    torch.testing.assert_close(fast.offsets, reference.offsets, rtol=0, atol=1e-10)
    if cell == "hm-lstm":  # rows that disagree at one step took the row-gathering path
        layer_2 = fast.operations[:, :, 1]
        assert ((layer_2 == COPY).any(dim=0) & (layer_2 != COPY).any(dim=0)).any()


def test_counts_are_the_operations_of_each_layer():
    generated = generate(small_model(), N_POINTS, 3, generator=torch.Generator().manual_seed(0))
    codes = generated.operations
    assert generated.counts.shape == (3, 3, 3)
    assert (generated.counts.sum(dim=2) == N_POINTS).all()
    for op in (COPY, UPDATE, FLUSH):
        assert torch.equal(generated.counts[:, :, op], (codes == op).sum(dim=1))
    assert (generated.counts[:, 0, COPY] == 0).all() and (generated.counts[:, 2, FLUSH] == 0).all()
    # a layer flushes right after its own boundary, and only then
    fired = generated.boundaries > 0.5
    assert torch.equal(codes[:, 1:, :2] == FLUSH, fired[:, :-1])


@pytest.mark.parametrize("n_samples", [1, 3])
def test_a_layer_that_copies_reads_none_of_its_weights(n_samples):
    model = small_model()
    never_fire(model)
    with torch.no_grad():  # everything only a flush of layer 1 or an update of layers 2-3 would read
        for linear in (model.core.top_down[0], model.core.top_down[1], model.core.recurrent[1],
                       model.core.recurrent[2], model.core.bottom_up[1], model.core.bottom_up[2]):
            linear.weight.fill_(float("nan"))
    fast = generate(model, N_POINTS, n_samples, generator=torch.Generator().manual_seed(7))
    assert (fast.counts[:, 1:, COPY] == N_POINTS).all() and (fast.counts[:, 0, UPDATE] == N_POINTS).all()
    assert torch.isfinite(fast.offsets).all()  # the NaN weights were never read
    with pytest.raises(RuntimeError, match="probability tensor"):  # the reference computes every gate,
        generate_reference(model, N_POINTS, n_samples)  # multiplies the NaNs by zero, and they reach p


def test_bernoulli_boundaries_are_binary_and_counted():
    model = small_model(boundary_mode="bernoulli")
    torch.manual_seed(0)
    generated = generate(model, N_POINTS, 2, generator=torch.Generator().manual_seed(0))
    assert set(generated.boundaries.unique().tolist()) <= {0.0, 1.0}
    assert (generated.counts.sum(dim=2) == N_POINTS).all()


def test_soft_boundaries_run_the_reference():
    reference, fast = both(small_model(boundary_mode="soft"), 2)
    assert torch.equal(fast.offsets, reference.offsets)


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    generate(small_model(), 3)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kwargs, message", [
    ({"n_points": 0}, "n_points"),
    ({"n_samples": 0}, "n_samples"),
    ({"bias": -1.0}, "bias"),
    ({"temperature": 0.0}, "temperature"),
    ({"slope": 0.0}, "slope"),
])
def test_bad_arguments_are_a_clear_value_error(kwargs, message):
    arguments = {"n_points": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(small_model(), **arguments)


@pytest.mark.parametrize("rows", [1, 2, 3, 8])
def test_batch_products_equal_torch(rows):
    """A batch's products go through few_rows.c (tiles from three rows, each weight transposed once):
    torch's F.linear up to float rounding, on the first call and on the cached transpose."""
    torch.manual_seed(rows)
    linear = few_row_linear()
    x, weight, bias = torch.randn(rows, 40), torch.randn(161, 40), torch.randn(161)
    for _ in range(2):
        torch.testing.assert_close(linear(x, weight, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)
