"""The HM-LSTM reference core: every operation rule of the paper (§3), checked one by one."""
import copy

import pytest
import torch

from handwriting_hm.hmlstm.core import (COPY, FLUSH, SLOPE_PRESETS, UPDATE, HMLSTM, HMLSTMState, SlopeSchedule,
                                 StackedLSTM, boundary, hard_sigmoid, make_core, operations)



@pytest.fixture(autouse=True)
def float64():
    """Exact comparisons without float32 noise; restored afterwards for other test files."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)

BIG = 100.0  # a boundary bias this large forces z (the pre-activation stays far from 0)


def random_state(model, batch, z=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    h = tuple(torch.randn(batch, size, generator=generator) * 0.5 for size in model.hidden_sizes)
    c = tuple(torch.randn(batch, size, generator=generator) for size in model.hidden_sizes)
    if z is None:
        z = torch.zeros(batch, model.num_layers - 1)
    return HMLSTMState(h, c, z)


def force_boundaries(model, fire):
    """Make layer l's detector always fire (True) or never fire (False), via its bias."""
    with torch.no_grad():
        for l, on in enumerate(fire):
            size = model.hidden_sizes[l]
            model.recurrent[l].weight[4 * size:].zero_()
            model.top_down[l].weight[4 * size:].zero_()
            model.bottom_up[l].weight[4 * size:].zero_()
            model.recurrent[l].bias[4 * size] = BIG if on else -BIG


def make_model(sizes=(5, 4, 3), layer_norm=False, seed=0, input_size=2):
    torch.manual_seed(seed)
    return HMLSTM(input_size, sizes, layer_norm=layer_norm)


# ----------------------------------------------------------------------------- the paper, reimplemented

def expected_step(model, x, state, slope=1.0):
    """Eq. 2-9 written out independently, per layer, as the test's own specification."""
    L = model.num_layers
    h_below, z_below = x, torch.ones(x.shape[0], 1)
    out_h, out_c, out_z = [], [], []
    for l in range(L):
        H = model.hidden_sizes[l]
        z_prev = state.z[:, l:l + 1] if l < L - 1 else torch.zeros(x.shape[0], 1)
        s = state.h[l] @ model.recurrent[l].weight.T + model.recurrent[l].bias
        if l < L - 1:
            s = s + z_prev * (state.h[l + 1] @ model.top_down[l].weight.T)
        s = s + z_below * (h_below @ model.bottom_up[l].weight.T)
        f, i, o, g = s[:, :4 * H].chunk(4, dim=1)
        f, i, o, g = f.sigmoid(), i.sigmoid(), o.sigmoid(), g.tanh()
        c = torch.empty_like(state.c[l])
        h = torch.empty_like(state.h[l])
        for b in range(x.shape[0]):
            if z_prev[b] == 1:  # FLUSH
                c[b] = i[b] * g[b]
                h[b] = o[b] * torch.tanh(c[b])
            elif z_below[b] == 1:  # UPDATE
                c[b] = f[b] * state.c[l][b] + i[b] * g[b]
                h[b] = o[b] * torch.tanh(c[b])
            else:  # COPY
                c[b] = state.c[l][b]
                h[b] = state.h[l][b]
        out_h.append(h)
        out_c.append(c)
        if l < L - 1:
            z = (((slope * s[:, 4 * H:] + 1) / 2).clamp(0, 1) > 0.5).double()
            copied = (z_prev == 0) & (z_below == 0)
            z = torch.where(copied, torch.zeros_like(z), z)
            out_z.append(z)
            h_below, z_below = h, z
    return out_h, out_c, torch.cat(out_z, dim=1)


def test_step_matches_the_papers_equations_in_every_case():
    model = make_model(sizes=(6, 5, 4, 3))
    batch = 16
    # every combination of z_{t-1} over the three detectors, twice, and random boundaries for z_t
    z_prev = torch.tensor([[(k >> j) & 1 for j in range(3)] for k in range(batch)], dtype=torch.float64)
    state = random_state(model, batch, z=z_prev)
    x = torch.randn(batch, 2)
    new_state, z = model.step(x, state, slope=1.0)
    h, c, z_expected = expected_step(model, x, state)
    for l in range(4):
        torch.testing.assert_close(new_state.h[l], h[l], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new_state.c[l], c[l], rtol=1e-12, atol=1e-12)
    assert torch.equal(z, z_expected)
    ops = operations(z.unsqueeze(1), initial_z=z_prev)[:, 0]
    assert set(ops[:, 1:].flatten().tolist()) == {COPY, UPDATE, FLUSH}  # all three rules were exercised


# ----------------------------------------------------------------------------- the three operations

def test_copy_keeps_c_and_h_bit_exact():
    model = make_model()
    force_boundaries(model, fire=[False, False])  # z^1 = 0 always -> layers 2 and 3 COPY
    state = random_state(model, 3)
    out = model(torch.randn(3, 9, 2), state=state)
    for l in (1, 2):
        assert torch.equal(out.state.h[l], state.h[l])
        assert torch.equal(out.state.c[l], state.c[l])
        assert torch.equal(out.hidden[l], state.h[l].unsqueeze(1).expand(-1, 9, -1))
    assert (operations(out.boundaries)[:, :, 1:] == COPY).all()


def test_flush_ignores_previous_cell_and_turns_top_down_on():
    model = make_model()
    x = torch.randn(4, 2)
    state = random_state(model, 4, z=torch.tensor([[1.0, 0.0]] * 4))  # layer 1 flushes now
    other_c = (state.c[0] + 5.0,) + state.c[1:]
    a, _ = model.step(x, state)
    b, _ = model.step(x, HMLSTMState(state.h, other_c, state.z))
    assert torch.equal(a.c[0], b.c[0])  # c_{t-1} was ignored
    # top-down on: the layer above's previous h now reaches layer 1
    other_h = (state.h[0], state.h[1] + 1.0, state.h[2])
    c, _ = model.step(x, HMLSTMState(other_h, state.c, state.z))
    assert not torch.allclose(a.c[0], c.c[0])


def test_update_uses_previous_cell():
    model = make_model()
    x = torch.randn(4, 2)
    state = random_state(model, 4)  # z_{t-1} = 0 everywhere: layer 1 UPDATEs
    other_c = (state.c[0] + 1.0,) + state.c[1:]
    a, _ = model.step(x, state)
    b, _ = model.step(x, HMLSTMState(state.h, other_c, state.z))
    assert not torch.allclose(a.c[0], b.c[0])


def test_layer_one_never_copies():
    model = make_model()
    force_boundaries(model, fire=[False, False])
    state = random_state(model, 2)
    out = model(torch.randn(2, 6, 2), state=state)
    assert (operations(out.boundaries)[:, :, 0] != COPY).all()
    steps = torch.cat([state.h[0].unsqueeze(1), out.hidden[0]], dim=1)
    assert (steps[:, 1:] != steps[:, :-1]).any(dim=2).all()  # h^1 changes at every step


def test_top_layer_never_flushes_and_has_no_detector():
    model = make_model()
    force_boundaries(model, fire=[True, True])  # every detector fires at every step
    assert model.recurrent[2].out_features == 4 * 3 and len(model.top_down) == 2
    state = random_state(model, 2)
    out = model(torch.randn(2, 5, 2), state=state)
    ops = operations(out.boundaries)
    assert (ops[:, 1:, 0] == FLUSH).all() and (ops[:, 1:, 1] == FLUSH).all()
    assert (ops[:, :, 2] == UPDATE).all()
    # the top layer always carries its cell forward: changing c_{t-1}^3 changes c_t^3
    other = HMLSTMState(state.h, state.c[:2] + (state.c[2] + 1.0,), state.z)
    assert not torch.allclose(model(torch.randn(2, 1, 2), state=other).state.c[2],
                              model(torch.randn(2, 1, 2), state=state).state.c[2])


# ----------------------------------------------------------------------------- which term is gated by what

def perturbed(model, module_name, layer):
    other = copy.deepcopy(model)
    with torch.no_grad():
        getattr(other, module_name)[layer].weight.add_(0.5)
    return other


@pytest.mark.parametrize("z_prev", [0.0, 1.0])
def test_recurrent_term_is_never_gated(z_prev):
    model = make_model(sizes=(4, 3))
    state = random_state(model, 2, z=torch.full((2, 1), z_prev))
    x = torch.randn(2, 2)
    other = perturbed(model, "recurrent", 0)
    assert not torch.allclose(model.step(x, state)[0].c[0], other.step(x, state)[0].c[0])


def test_top_down_is_gated_by_the_layers_own_previous_boundary():
    model = make_model(sizes=(4, 3))
    x = torch.randn(2, 2)
    other = perturbed(model, "top_down", 0)
    # z_{t-1}^1 = 0: UPDATE, top-down off
    state = random_state(model, 2, z=torch.zeros(2, 1))
    assert torch.equal(model.step(x, state)[0].c[0], other.step(x, state)[0].c[0])
    # z_{t-1}^1 = 1: FLUSH, top-down on
    state = random_state(model, 2, z=torch.ones(2, 1))
    assert not torch.allclose(model.step(x, state)[0].c[0], other.step(x, state)[0].c[0])


@pytest.mark.parametrize("fires_now", [False, True])
def test_bottom_up_is_gated_by_the_current_boundary_below(fires_now):
    model = make_model(sizes=(4, 3, 3))
    force_boundaries(model, fire=[fires_now, False])
    other = perturbed(model, "bottom_up", 1)  # W_1^2
    x = torch.randn(2, 2)
    # layer 2 flushes (z_{t-1}^2 = 1), so it computes whatever z^1 does; z_{t-1}^1 is the opposite
    # of z_t^1, so a gate reading the previous boundary below would get it wrong
    state = random_state(model, 2, z=torch.tensor([[0.0 if fires_now else 1.0, 1.0]] * 2))
    a, b = model.step(x, state)[0], other.step(x, state)[0]
    assert torch.equal(a.c[0], b.c[0])
    assert torch.equal(a.c[1], b.c[1]) != fires_now


# ----------------------------------------------------------------------------- boundary detector

@pytest.mark.parametrize("mode", ["step", "bernoulli"])
@pytest.mark.parametrize("slope", [1.0, 2.5])
def test_straight_through_gradient_is_half_the_slope_inside_the_window(mode, slope):
    s = torch.tensor([-2.0, -0.9 / slope, -0.1, 0.0, 0.3 / slope, 0.99 / slope, 1.01 / slope, 3.0],
                     requires_grad=True)
    z = boundary(s, slope, mode)
    assert set(z.tolist()) <= {0.0, 1.0}
    z.sum().backward()
    inside = (slope * s.detach()).abs() < 1
    assert torch.equal(s.grad, torch.where(inside, torch.tensor(slope / 2), torch.tensor(0.0)))


def test_step_boundary_is_hard_sigmoid_above_one_half():
    s = torch.linspace(-3, 3, 61)
    assert torch.equal(boundary(s, 2.0, "step"), (hard_sigmoid(2.0 * s) > 0.5).double())
    soft = boundary(s, 2.0, "soft")
    assert torch.equal(soft, ((2.0 * s + 1) / 2).clamp(0, 1))


def test_bernoulli_boundary_fires_with_probability_z_tilde():
    torch.manual_seed(0)
    s = torch.full((20000,), 0.2)  # z~ = 0.6 at slope 1
    assert abs(boundary(s, 1.0, "bernoulli").mean().item() - 0.6) < 0.02


def test_soft_boundaries_are_continuous_and_flow_through():
    model = make_model()
    out = model(torch.randn(2, 8, 2), boundary_mode="soft")
    values = out.boundaries.flatten()
    assert ((values >= 0) & (values <= 1)).all() and ((values > 0) & (values < 1)).any()


def test_slope_annealing_presets():
    assert SLOPE_PRESETS["ptb"] == SlopeSchedule(0.04, 5.0)
    assert SLOPE_PRESETS["handwriting"] == SlopeSchedule(0.004, 3.0)
    schedule = SLOPE_PRESETS["ptb"]
    assert schedule(0) == 1.0 and schedule(50) == pytest.approx(3.0) and schedule(1000) == 5.0
    assert SLOPE_PRESETS["handwriting"](250) == pytest.approx(2.0)


def test_slope_changes_the_boundaries():
    model = make_model()
    x = torch.randn(3, 10, 2)
    torch.manual_seed(1)
    soft_1 = model(x, slope=1.0, boundary_mode="soft").boundaries
    soft_3 = model(x, slope=3.0, boundary_mode="soft").boundaries
    assert not torch.allclose(soft_1, soft_3)


# ----------------------------------------------------------------------------- sequences

def test_padding_never_changes_a_valid_step():
    model = make_model(layer_norm=True)
    x = torch.randn(3, 12, 2)
    lengths = torch.tensor([12, 7, 1])
    padded = x.clone()
    padded[1, 7:] = 99.0  # garbage in the padding
    padded[2, 1:] = -99.0
    out = model(padded, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = model(x[b:b + 1, :n])
        for l in range(3):
            torch.testing.assert_close(out.hidden[l][b:b + 1, :n], alone.hidden[l], rtol=0, atol=1e-12)
            torch.testing.assert_close(out.state.h[l][b:b + 1], alone.state.h[l], rtol=0, atol=1e-12)
            torch.testing.assert_close(out.state.c[l][b:b + 1], alone.state.c[l], rtol=0, atol=1e-12)
            assert (out.hidden[l][b, n:] == 0).all()
        assert torch.equal(out.boundaries[b:b + 1, :n], alone.boundaries)
        assert torch.equal(out.state.z[b:b + 1], alone.state.z)


def test_carried_state_equals_one_long_run():
    model = make_model(layer_norm=True)
    x = torch.randn(2, 15, 2)
    whole = model(x)
    first = model(x[:, :6])
    second = model(x[:, 6:], state=first.state)
    for l in range(3):
        assert torch.equal(torch.cat([first.hidden[l], second.hidden[l]], dim=1), whole.hidden[l])
        assert torch.equal(second.state.c[l], whole.state.c[l])
    assert torch.equal(torch.cat([first.boundaries, second.boundaries], dim=1), whole.boundaries)


def test_gradients_reach_every_parameter_through_the_boundaries():
    model = make_model(layer_norm=True)
    out = model(torch.randn(4, 20, 2), slope=1.0)
    (sum(h.pow(2).sum() for h in out.hidden)).backward()
    detector_grads = [model.recurrent[l].weight.grad[4 * model.hidden_sizes[l]:] for l in range(2)]
    assert all(g.abs().sum() > 0 for g in detector_grads)


@pytest.mark.slow
def test_layer_norm_trains():
    torch.manual_seed(0)
    model = HMLSTM(1, (16, 16), layer_norm=True)
    readout = torch.nn.Linear(32, 1)
    x = torch.randn(8, 20, 1)
    target = torch.cumsum(x, dim=1) * 0.3  # a running sum: needs memory
    optimiser = torch.optim.Adam(list(model.parameters()) + list(readout.parameters()), lr=1e-2)
    losses = []
    for _ in range(150):
        out = model(x)
        loss = (readout(torch.cat(out.hidden, dim=-1)) - target).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert all(norm.weight.grad is not None for norm in model.norms)


# ----------------------------------------------------------------------------- the LSTM baseline

def test_lstm_baseline_loop_matches_cudnn_path():
    torch.manual_seed(0)
    model = StackedLSTM(2, (5, 4))
    x = torch.randn(3, 7, 2)
    fast = model(x)
    looped = model(x, lengths=torch.tensor([7, 7, 7]))  # any mask takes the loop
    for l in range(2):
        torch.testing.assert_close(fast.hidden[l], looped.hidden[l])
        torch.testing.assert_close(fast.state.c[l], looped.state.c[l])
    assert fast.boundaries.shape == (3, 7, 0)


def test_lstm_baseline_carries_state_and_masks_padding():
    torch.manual_seed(0)
    model = StackedLSTM(2, (5, 4), layer_norm=True)
    x = torch.randn(2, 9, 2)
    whole = model(x)
    first = model(x[:, :4])
    second = model(x[:, 4:], state=first.state)
    torch.testing.assert_close(second.state.h[1], whole.state.h[1])
    padded = model(x, lengths=torch.tensor([9, 3]))
    torch.testing.assert_close(padded.state.h[0][1], model(x[1:2, :3]).state.h[0][0])


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, message", [
    (lambda m: m(torch.randn(2, 5)), "shape \\(batch, time, 2\\)"),
    (lambda m: m(torch.randn(2, 5, 3)), "got \\(2, 5, 3\\)"),
    (lambda m: m(torch.ones(2, 5, 2, dtype=torch.long)), "floating-point"),
    (lambda m: m(torch.randn(2, 5, 2), slope=0.0), "slope"),
    (lambda m: m(torch.randn(2, 5, 2), slope=-1.0), "slope"),
    (lambda m: m(torch.randn(2, 5, 2), slope=float("nan")), "slope"),
    (lambda m: m(torch.randn(2, 5, 2), boundary_mode="gumbel"), "unknown boundary mode"),
    (lambda m: m(torch.randn(2, 5, 2), state=m.initial_state(3)), "state does not fit"),
    (lambda m: m(torch.randn(2, 5, 2), lengths=torch.tensor([5, 6])), "lengths"),
    (lambda m: m(torch.randn(2, 5, 2), lengths=torch.tensor([5])), "lengths"),
    (lambda m: m(torch.randn(2, 5, 2), mask=torch.ones(2, 4, dtype=torch.bool)), "mask"),
])
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_model())


def test_bad_construction_is_a_clear_value_error():
    with pytest.raises(ValueError, match="at least 2 layers"):
        HMLSTM(2, (8,))
    with pytest.raises(ValueError, match="unknown cell"):
        make_core("gru", 2, (8, 8))
    with pytest.raises(ValueError, match="unknown boundary mode"):
        HMLSTM(2, (8, 8), boundary_mode="hard")


def test_layer_norm_keeps_straight_through_gradients_bounded():
    # With the boundary pre-activation left out of the layer norm, it stayed tiny, every z passed
    # gradient at every step, and seed 2 here gave a gradient norm of 7.6e5 (IAM-OnDB: overflow).
    torch.set_default_dtype(torch.float32)  # as in training (the fixture restores it)
    for seed in range(3):
        torch.manual_seed(seed)
        model = HMLSTM(3, (64, 64, 64), layer_norm=True)
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(16, 100, 3, generator=generator, dtype=torch.float32)
        x[..., 2] = (torch.rand(16, 100, generator=generator) < 0.05).float()
        out = model(x)
        sum(h.pow(2).mean() for h in out.hidden).backward()
        assert torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9).item() < 100.0


def test_copy_gradient_reaches_the_core_from_the_model_config():
    from handwriting_hm.hmlstm.core import make_core
    from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel

    config = HandwritingConfig(hidden_sizes=(8, 8), embedding_size=8, n_mixtures=2, copy_gradient="mixed")
    assert HandwritingModel(config).core.copy_gradient == "mixed"
    assert HandwritingModel(HandwritingConfig.from_dict({"hidden_sizes": [8, 8]})).core.copy_gradient == "straight"
    with pytest.raises(ValueError, match="copy_gradient"):
        make_core("hm-lstm", 3, (8, 8), copy_gradient="sideways")


@pytest.mark.parametrize("copy_gradient, impl", [("straight", "reference"), ("mixed", "reference"),
                                                  ("mixed", "fused")])
def test_a_long_copy_run_does_not_multiply_the_boundary_gradient(copy_gradient, impl):
    """Layer 2 COPYs for 30 steps while its detector would fire (z^ = 1, inside the window): the
    gradient of its last z with respect to its first passes once, it is not doubled at each step
    (with "mixed" it was 2**30 before the kept z stopped passing gradient; see core.py)."""
    model = make_model(sizes=(4, 4, 4))
    force_boundaries(model, [False, True])
    with torch.no_grad():
        model.recurrent[1].bias[4 * 4] = 0.5  # z~ = 0.75: z^ = 1, inside the straight-through window
    model.copy_gradient = copy_gradient
    state = random_state(model, batch=2)
    initial_z = state.z.clone().requires_grad_()
    out = model(torch.randn(2, 30, 2), state=state._replace(z=initial_z), impl=impl)
    assert (operations(out.boundaries)[:, :, 1] == COPY).all()
    out.state.z[:, 1].sum().backward()
    assert torch.allclose(initial_z.grad[:, 1], torch.ones(2))


@pytest.mark.parametrize("boundary_mode, copy_gradient", [("soft", "straight"), ("soft", "mixed")])
def test_the_sparse_path_refuses_what_it_cannot_compute(boundary_mode, copy_gradient):
    """It would otherwise run with binary, straight gradients whatever was asked for."""
    core = HMLSTM(3, (8, 8), boundary_mode=boundary_mode, copy_gradient=copy_gradient, impl="sparse")
    with pytest.raises(ValueError, match="impl='sparse' needs"):
        core(torch.randn(2, 5, 3))
