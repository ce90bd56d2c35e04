"""What sits on top of the recurrent core: the gated output module (paper §4.1) and a softmax head.

- GatedOutput: h^e = ReLU(sum_l g^l W^e_l h^l + b^e), with a scalar gate
  g^l = sigm(w^l [h^1; ...; h^L] + b^g_l) per layer.
- SoftmaxHead: logits over a vocabulary (characters, for the language model).

Two biases are a choice of ours, not the paper's: §4.1 writes the gate as sigm(w^l h_t) and the
embedding as ReLU(sum_l g^l W^e_l h^l), both without a bias. We keep a bias b^g_l on each gate
(nn.Linear's default) and one shared bias b^e inside the ReLU (layer 1's W^e carries it, the
other layers' have none, so it is added once). The shipped models were trained with both.

The mixture-density head for handwriting lives with its client, in `handwriting_hm.mixture`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GatedOutput(nn.Module):
    """The output embedding h^e_t from every layer's h_t, each weighted by a learned scalar gate."""

    def __init__(self, hidden_sizes: Sequence[int], embedding_size: int) -> None:
        super().__init__()
        self.hidden_sizes = tuple(hidden_sizes)
        self.gate = nn.Linear(sum(self.hidden_sizes), len(self.hidden_sizes))  # rows are w^1..w^L
        self.embed = nn.ModuleList(nn.Linear(h, embedding_size, bias=(l == 0))  # W^e_l (one shared bias)
                                   for l, h in enumerate(self.hidden_sizes))

    def forward(self, hidden: Sequence[Tensor]) -> Tensor:
        """hidden: per layer (..., H_l). Returns (..., embedding_size)."""
        if len(hidden) != len(self.hidden_sizes) or any(h.shape[-1] != s for h, s in zip(hidden, self.hidden_sizes)):
            raise ValueError(f"expected {len(self.hidden_sizes)} layers of sizes {self.hidden_sizes}, "
                             f"got {[tuple(h.shape) for h in hidden]}")
        gates = torch.sigmoid(self.gate(torch.cat(tuple(hidden), dim=-1)))  # g^l, (..., L)
        total = sum(gates[..., l:l + 1] * embed(h) for l, (embed, h) in enumerate(zip(self.embed, hidden)))
        return F.relu(total)


class SoftmaxHead(nn.Module):
    """Logits over a vocabulary from the output embedding."""

    def __init__(self, in_features: int, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        self.linear = nn.Linear(in_features, vocab_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h)

    @staticmethod
    def log_likelihood(logits: Tensor, target: Tensor) -> Tensor:
        """log p(target) in nats per position: logits (..., V), target (...) integer ids."""
        return -F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none").view(target.shape)
