"""What a trainer implements for its model and data: the protocol the training loop (trainer.Trainer) calls.
docs/training.md ("The training loop") says when each method runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch


class TrainingTask:
    """What a trainer implements for its model and data; the defaults suit a stateless task."""

    slope: float = 1.0  # the boundary slope the model trains at now; every checkpoint records it

    def batches(self, epoch: int) -> Iterable[Any]:
        """The batches of `epoch`, identical on every call with the same epoch."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int | torch.Tensor]:
        """Mean loss of `batch` to backpropagate, and how many items (points, characters) it covers."""
        raise NotImplementedError

    def start_step(self, device: torch.device) -> None:
        """Called before each step's loss(), never inside a CUDA graph: advance per-step schedules here
        (e.g. the slope) and write what loss() reads of them into tensors on `device`."""

    def graph_safe(self, batch: Any) -> bool:
        """Whether loss(model, batch) may be captured in a CUDA graph and replayed for later batches of
        the same shapes. A replay runs loss()'s kernels, not its Python, so loss() must then read
        everything that changes between steps from the batch or from tensors that start_step()
        refills, change no Python state, wait for no device value (.item(), bool(tensor)) and count
        its items as a tensor."""
        return False

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """Validation metrics; must include the trainer's `metric` key (lower is better)."""
        raise NotImplementedError

    def metric_regime(self) -> str:
        """What validation measures now, in words ("" for the task's usual measure). Validations of different
        regimes are not compared: where the regime changes (an oracle that stops forcing the boundaries, say),
        best.pt and the plateau schedule start again from the first validation of the new one."""
        return ""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first batch of each epoch (not again when resuming mid-epoch)."""

    def scalars(self) -> dict[str, float]:
        """Extra numbers for the "train" log records, e.g. the boundary slope."""
        return {}

    def state_dict(self) -> dict:
        """Task state to checkpoint (tensors and primitives), e.g. the slope or a carried hidden state."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    def write_samples(self, model: torch.nn.Module, path: Path) -> None:
        """Optionally write a PNG of a few samples to `path`; called at each validation."""
