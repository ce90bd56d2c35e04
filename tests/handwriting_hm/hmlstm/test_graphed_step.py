"""GraphedStep (graphed_step.py): on the CPU it must fall back to the eager step, say so once,
and give exactly the eager loop's parameters; on a GPU it must give the eager loop's too."""
import copy
import warnings

import pytest
import torch
from torch import nn

from handwriting_hm.hmlstm.graphed_step import GraphedStep, optimizer_step

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_training(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, capturable=DEVICE.type == "cuda")
    return model, optimizer


def batches(count, size=4):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, generator=generator).to(DEVICE), torch.randn(size, 1, generator=generator).to(DEVICE))
            for _ in range(count)]


def eager_loop(model, optimizer, data):
    losses = []
    for x, y in data:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def graphed_loop(model, optimizer, data):
    step = GraphedStep(optimizer_step(lambda x, y: nn.functional.mse_loss(model(x), y), optimizer), model.parameters(),
                       data[0], optimizer=optimizer)
    return [step(x, y) for x, y in data]


def test_same_steps_as_the_eager_loop_and_one_warning_when_falling_back():
    data = batches(4) + batches(1, size=2)  # a last, smaller batch runs eagerly either way
    model, optimizer = make_training()
    eager_model = copy.deepcopy(model)
    eager_optimizer = torch.optim.Adam(eager_model.parameters(), lr=0.01, capturable=DEVICE.type == "cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = graphed_loop(model, optimizer, data)
    expected = eager_loop(eager_model, eager_optimizer, data)
    fallback = [w for w in caught if "GraphedStep" in str(w.message)]
    assert len(fallback) == (0 if DEVICE.type == "cuda" else 1)
    tolerance = 0.0 if DEVICE.type == "cpu" else 1e-6  # a replay may order reductions differently
    for a, b in zip(losses, expected):
        assert (a - b).abs().max() <= tolerance
    for a, b in zip(model.parameters(), eager_model.parameters()):
        assert (a - b).abs().max() <= tolerance


@pytest.mark.skipif(DEVICE.type == "cuda", reason="on a GPU Adam is capturable")
def test_a_non_capturable_optimizer_runs_eagerly():
    model, _ = make_training()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = GraphedStep(optimizer_step(lambda x: model(x).sum(), optimizer), model.parameters(), [torch.zeros(2, 3)],
                       optimizer=optimizer)
    with pytest.warns(UserWarning, match="running eagerly"):
        step(torch.ones(2, 3))
