"""The library's COPY-skipping stepper (hmlstm/stepper.py) against the reference step, with a client's extra
input through its hook: the same states and boundaries while rows COPY, FLUSH and UPDATE side by side."""
import pytest
import torch
import torch.nn.functional as F

from handwriting_hm.hmlstm.core import HMLSTM
from handwriting_hm.hmlstm.stepper import CopySkippingStepper


def reference_step(core, x, state, extras, slope):
    """HMLSTM.layer_step layer by layer, each with its extra bottom-up input."""
    h_below, z_below, new_h, new_c, new_z = x, x.new_ones(x.shape[0], 1), [], [], []
    for l in range(core.num_layers):
        h, c, z = core.layer_step(l, h_below, z_below, state, slope, "step", extra_bottom_up=extras[l])
        new_h.append(h)
        new_c.append(c)
        if z is not None:
            new_z.append(z)
            h_below, z_below = h, z
    z_t = torch.cat(new_z, dim=1)
    return type(state)(tuple(new_h), tuple(new_c), z_t)


@pytest.mark.parametrize("boundary_norm", [True, False])
@pytest.mark.parametrize("carried", [False, True])
def test_the_stepper_with_an_extra_input_is_the_reference_step_with_it(carried, boundary_norm):
    """From zeros, and from a carried state whose boundaries fired in some rows (layer 1 then has no extra input:
    the hook answers None, as a client whose input reaches layer 1 another way does); with the boundary unit
    inside the layer norm and outside it."""
    torch.manual_seed(0)
    core = HMLSTM(3, (8, 6, 5), layer_norm=True, boundary_norm=boundary_norm).double()
    weights = [torch.randn(4 * size + (1 if l < 2 else 0), 2, dtype=torch.float64)
               for l, size in enumerate(core.hidden_sizes)]
    if carried:
        weights[0] = None
    n, slope = 6, 1.0
    state = core.initial_state(n)
    if carried:
        state = type(state)(tuple(torch.randn_like(h) for h in state.h), tuple(torch.randn_like(c) for c in state.c),
                            torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 0]], dtype=torch.float64))
    stepper = CopySkippingStepper(core, n, slope, linear=F.linear, state=state if carried else None)
    seen = torch.zeros(2, 2, dtype=torch.bool)  # per detector: fired somewhere, stayed off somewhere
    asked = []
    with torch.no_grad():
        for _ in range(20):
            x, w = torch.randn(n, 3, dtype=torch.float64), torch.randn(n, 2, dtype=torch.float64)

            def extra(l, rows):
                asked.append(n if rows is None else len(rows))
                if weights[l] is None:
                    return None
                return F.linear(w if rows is None else w.index_select(0, rows), weights[l])

            extras = [None if weight is None else F.linear(w, weight) for weight in weights]
            state = reference_step(core, x, state, extras, slope)
            z_t = x.new_zeros(n, 2)
            stepper.step(x, z_t, extra)
            assert torch.equal(z_t, state.z)
            for l in range(3):
                torch.testing.assert_close(stepper.h[l], state.h[l], rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(stepper.c[l], state.c[l], rtol=1e-12, atol=1e-12)
            seen |= torch.stack([(z_t > 0.5).any(dim=0), (z_t < 0.5).any(dim=0)], dim=1)
    assert seen.all()  # each detector both fired and not: rows COPY beside rows that compute
    assert min(asked) < n  # the hook was asked for some rows only


@pytest.mark.parametrize("settings", [dict(boundary_mode="soft"), dict(z_on_copy="recompute", copy_gradient="exact")])
def test_the_stepper_refuses_what_it_would_compute_differently(settings):
    with pytest.raises(ValueError, match="HMLSTM.step"):
        CopySkippingStepper(HMLSTM(3, (4, 4), **settings), 2, 1.0)
