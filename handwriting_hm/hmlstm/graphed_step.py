"""A whole training step (forward, loss, backward, optimizer step) captured once in a CUDA graph
and replayed per batch, for inputs of fixed shapes; the plain eager step wherever capture is
impossible (the CPU, or an error while capturing), said once through warnings.

The recipe is PyTorch's "whole network capture" (torch.cuda.graphs): static input buffers,
warm-up iterations on a side stream, gradients allocated inside the graph (set_to_none before
capture), and an optimizer whose step is capturable (torch.optim.Adam(..., capturable=True)).
The warm-up iterations really step the optimizer; the parameters and optimizer state are put
back afterwards, so the first replayed step is the step an eager loop would have taken.
"""
import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor, nn


class GraphedStep:
    """step = GraphedStep(model, optimizer, loss_fn, example_inputs); loss = step(*inputs).

    loss_fn(*inputs) -> scalar loss runs the model's forward and the loss; the step adds
    zero_grad, backward and optimizer.step. Calls whose inputs differ in shape, dtype or device
    from example_inputs (a last, smaller batch) run eagerly. The returned loss is a fresh tensor.
    Restoring the optimizer state after warm-up zeroes state that did not exist before, which
    is a fresh state for Adam and AdamW (and not, for instance, for SGD with dampening).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[..., Tensor],
                 example_inputs: Sequence[Tensor], warmup_steps: int = 3) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.signature = [(t.shape, t.dtype, t.device) for t in example_inputs]
        self.warmup_steps = warmup_steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[Tensor] = []
        self.static_loss: Tensor | None = None
        self.tried = False  # whether capture has been tried
        self.reason = self._why_not_capturable(example_inputs)  # None while capture may work

    def __call__(self, *inputs: Tensor) -> Tensor:
        if [(t.shape, t.dtype, t.device) for t in inputs] != self.signature:
            return self.eager_step(*inputs)
        if not self.tried:  # capture on the first call with the example's shapes, or say why not, once
            self.tried = True
            if self.reason is None:
                self._capture(inputs)
            if self.reason is not None:
                warnings.warn(f"GraphedStep: running eagerly ({self.reason})", stacklevel=2)
        if self.graph is None:
            return self.eager_step(*inputs)
        for static, new in zip(self.static_inputs, inputs):
            static.copy_(new)
        self.graph.replay()
        return self.static_loss.detach().clone()

    def eager_step(self, *inputs: Tensor) -> Tensor:
        """The step without a graph: what a replay computes."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(*inputs)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _why_not_capturable(self, inputs: Sequence[Tensor]) -> str | None:
        if not torch.cuda.is_available() or not all(t.is_cuda for t in inputs):
            return "CUDA graphs need CUDA inputs"
        if not all(group.get("capturable", False) for group in self.optimizer.param_groups):
            return "the optimizer is not capturable (e.g. torch.optim.Adam(..., capturable=True))"
        return None

    def _capture(self, inputs: Sequence[Tensor]) -> None:
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        saved_parameters = [p.detach().clone() for p in parameters]
        saved_state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in self.optimizer.state[p].items()}
                       for p in parameters if p in self.optimizer.state}
        self.static_inputs = [t.clone() for t in inputs]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: lazy initialisation and autograd's buffers, off the graph
                for _ in range(self.warmup_steps):
                    self.eager_step(*self.static_inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)  # the graph allocates the gradients it will reuse
            with torch.cuda.graph(graph):
                self.static_loss = self.loss_fn(*self.static_inputs)
                self.static_loss.backward()
                self.optimizer.step()
            self.graph = graph
        except Exception as error:  # capture is an optimisation: any failure means the eager step
            self.reason = f"capture failed: {type(error).__name__}: {error}"
            self.graph, self.static_loss = None, None
            self.optimizer.zero_grad(set_to_none=True)
        finally:  # undo the warm-up's steps in place: the graph holds these very tensors
            with torch.no_grad():
                for p, saved in zip(parameters, saved_parameters):
                    p.copy_(saved)
                for p in parameters:
                    for key, value in self.optimizer.state.get(p, {}).items():
                        if torch.is_tensor(value):
                            before = saved_state.get(p, {}).get(key)
                            if before is None:
                                value.zero_()
                            else:
                                value.copy_(before)
