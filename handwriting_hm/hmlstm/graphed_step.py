"""A training step captured once in a CUDA graph and replayed per batch, for inputs of fixed
shapes; the plain eager step wherever capture is impossible (the CPU, a non-capturable
optimizer, an error while capturing), said once through warnings.

The recipe is PyTorch's "whole network capture" (torch.cuda.graphs): static input buffers,
warm-up iterations on a side stream, gradients allocated inside the graph (set to None before
capture, so that the captured backward writes them rather than adds to them). The step may
include the optimizer's step (`optimizer_step`, with torch.optim.Adam(..., capturable=True)) or
leave it to the caller, as the trainer does, which steps only when the loss was finite.

A replay runs the captured kernels only, not the step's Python: a number the step read at
capture (a learning rate, a slope) stays what it was then. Whatever changes between steps must
be a tensor the step reads, refilled before each call (see core.Slope).
"""
import warnings
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

StepOutputs = Tensor | tuple[Tensor, ...]


def optimizer_step(loss_fn: Callable[..., Tensor], optimizer: torch.optim.Optimizer) -> Callable[..., Tensor]:
    """A step function for GraphedStep: loss_fn's forward, its backward and optimizer.step(); returns the loss."""
    def step(*inputs: Tensor) -> Tensor:
        loss = loss_fn(*inputs)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


class GraphedStep:
    """step = GraphedStep(step_fn, parameters, example_inputs); outputs = step(*inputs).

    step_fn(*inputs) runs a forward and its backward (and whatever follows, e.g. clipping or an
    optimizer step) and returns a tensor or a tuple of tensors. Before each call the parameters'
    gradients are None, and afterwards they hold this call's gradients, replayed or not. Calls
    whose inputs differ in shape, dtype or device from example_inputs (a last, smaller batch)
    run eagerly. The outputs are fresh tensors.

    optimizer: give it when step_fn steps it. Its warm-up steps are then undone (parameters and
    optimizer state put back), so the first replayed step is the step an eager loop would have
    taken; that zeroes state that did not exist before, a fresh state for Adam and AdamW. It must
    be capturable (torch.optim.Adam(..., capturable=True)), or the step runs eagerly.
    """

    def __init__(self, step_fn: Callable[..., StepOutputs], parameters: Iterable[nn.Parameter],
                 example_inputs: Sequence[Tensor], optimizer: torch.optim.Optimizer | None = None,
                 warmup_steps: int = 3) -> None:
        self.step_fn, self.optimizer = step_fn, optimizer
        self.parameters = list(parameters)
        self.signature = [(t.shape, t.dtype, t.device) for t in example_inputs]
        self.warmup_steps = warmup_steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[Tensor] = []
        self.static_outputs: StepOutputs | None = None
        self.gradients: list[Tensor | None] = []  # where the graph writes each parameter's gradient
        self.tried = False  # whether capture has been tried
        self.reason = self._why_not_capturable(example_inputs)  # None while capture may work

    def __call__(self, *inputs: Tensor) -> StepOutputs:
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
        for parameter, gradient in zip(self.parameters, self.gradients):
            parameter.grad = gradient  # a caller's zero_grad(set_to_none=True) let go of them
        return _cloned(self.static_outputs)

    def eager_step(self, *inputs: Tensor) -> StepOutputs:
        """The step without a graph: what a replay computes."""
        for parameter in self.parameters:
            parameter.grad = None
        return self.step_fn(*inputs)

    def _why_not_capturable(self, inputs: Sequence[Tensor]) -> str | None:
        if not torch.cuda.is_available() or not all(t.is_cuda for t in inputs):
            return "CUDA graphs need CUDA inputs"
        if self.optimizer is not None and not all(group.get("capturable", False)
                                                  for group in self.optimizer.param_groups):
            return "the optimizer is not capturable (e.g. torch.optim.Adam(..., capturable=True))"
        return None

    def _capture(self, inputs: Sequence[Tensor]) -> None:
        optimized = [p for group in self.optimizer.param_groups for p in group["params"]] if self.optimizer else []
        saved_parameters = [p.detach().clone() for p in optimized]
        saved_state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in self.optimizer.state[p].items()}
                       for p in optimized if p in self.optimizer.state}
        self.static_inputs = [t.clone() for t in inputs]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: lazy initialisation and autograd's buffers, off the graph
                for _ in range(self.warmup_steps):
                    self.eager_step(*self.static_inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            for parameter in self.parameters:  # the graph allocates the gradients it will reuse
                parameter.grad = None
            with torch.cuda.graph(graph):
                self.static_outputs = self.step_fn(*self.static_inputs)
            self.gradients = [p.grad for p in self.parameters]
            self.graph = graph
        except Exception as error:  # capture is an optimisation: any failure means the eager step
            self.reason = f"capture failed: {type(error).__name__}: {error}"
            self.graph, self.static_outputs, self.gradients = None, None, []
            for parameter in self.parameters:
                parameter.grad = None
        finally:  # undo the warm-up's optimizer steps in place: the graph holds these very tensors
            with torch.no_grad():
                for p, saved in zip(optimized, saved_parameters):
                    p.copy_(saved)
                for p in optimized:
                    for key, value in self.optimizer.state.get(p, {}).items():
                        if torch.is_tensor(value):
                            before = saved_state.get(p, {}).get(key)
                            if before is None:
                                value.zero_()
                            else:
                                value.copy_(before)


def _cloned(outputs: StepOutputs) -> StepOutputs:
    return tuple(t.clone() for t in outputs) if isinstance(outputs, tuple) else outputs.clone()
