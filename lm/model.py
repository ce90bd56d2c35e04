"""The character-level language model: embedding -> recurrent core -> gated output -> softmax (paper §4.1).

The input embedding is linear (a lookup table, which is a linear map of the one-hot symbol,
with no nonlinearity), 128-dimensional; the core, the gated output module and the softmax head
are the shared ones from `handwriting_hm`. Input at step t is symbol x_t, the target x_{t+1}.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from handwriting_hm.hmlstm.checkpoint import export_checkpoint, load_model
from handwriting_hm.hmlstm.core import HMLSTMOutput, HMLSTMState
from handwriting_hm.hmlstm.recipes import core_from_config, with_preactivations
from handwriting_hm.hmlstm.output import GatedOutput, SoftmaxHead

from .config import LMConfig  # defined without torch (for the parser); clients import it here too
from .shipped import DEFAULT_MODEL, SHIPPED

KIND = "lm"


class LMOutput(NamedTuple):
    logits: Tensor  # (B, T, V): the next symbol's distribution after reading each input
    core: HMLSTMOutput  # every layer's h, the boundaries, the final state


class LanguageModel(nn.Module):
    """Next-symbol prediction with an HM-LSTM (or LSTM) core."""

    def __init__(self, config: LMConfig, impl: str = "reference") -> None:
        """impl: how an HM-LSTM core runs ("reference", "fused", "auto"); not part of the config,
        since it changes the speed, not the model."""
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.input_embedding)
        self.core = core_from_config(config, config.input_embedding, impl)
        self.output = GatedOutput(config.hidden_sizes, config.embedding_size)
        self.head = SoftmaxHead(config.embedding_size, config.vocab_size)

    def forward(self, ids: Tensor, state: HMLSTMState | None = None, mask: Tensor | None = None,
                slope: float = 1.0, boundary_mode: str | None = None, forced_z1: Tensor | None = None,
                impl: str | None = None, preactivations: bool = False) -> LMOutput:
        """ids: (B, T) input symbols; state: carried from the previous window (zeros if None);
        mask: (B, T) valid steps (padded steps leave the state untouched). boundary_mode, impl: override
        the core's for this call; forced_z1 (B, T): layer 1's boundaries, given (the oracle; HM-LSTM only);
        preactivations: make sure the core's output carries the boundary pre-activations, recomputed
        (HMLSTM.boundary_preactivations) where the path that ran gives none."""
        extra = {} if self.config.cell == "lstm" else {"boundary_mode": boundary_mode, "forced_z1": forced_z1,
                                                        "impl": impl}
        x = self.embedding(ids)
        core = self.core(x, state=state, mask=mask, slope=slope, **extra)
        if preactivations:
            core = with_preactivations(self.core, x, core, state)
        return LMOutput(self.head(self.output(core.hidden)), core)


# ----------------------------------------------------------------------------- loading and export

class LoadedLM(NamedTuple):
    model: LanguageModel  # in eval mode, float32
    vocab: list[str]  # index = id
    dataset: str  # "ptb", "text8", "enwik8": how free text is encoded
    slope: float  # the boundary slope at the time of the checkpoint
    metadata: dict[str, Any]


def resolve_model_path(path: str | Path | None) -> Path:
    """None or "default" -> the shipped HM-LSTM, "lstm" -> the shipped LN-LSTM; anything else as given."""
    return DEFAULT_MODEL if path is None else SHIPPED.get(str(path), Path(path))


def load_lm(path: str | Path | None = None, map_location: Any = "cpu") -> LoadedLM:
    """Load an lm checkpoint (a run's .pt or an exported model) for inference; ValueError if unusable."""
    loaded = load_model(resolve_model_path(path), KIND, LMConfig, LanguageModel, "language model", _read_vocabulary,
                        map_location)
    vocab, dataset = loaded.read
    return LoadedLM(loaded.model, vocab, dataset, loaded.slope, loaded.metadata)


def _read_vocabulary(metadata: dict, model: LanguageModel) -> tuple[list[str], str]:
    """The vocabulary (index = id) and the dataset name a checkpoint's metadata gives, checked against the model."""
    vocab = [str(symbol) for symbol in metadata["vocab"]]
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"vocabulary of {len(vocab)} symbols for a {model.config.vocab_size}-symbol model")
    return vocab, str(metadata["dataset"])


def export_model(source: str | Path, destination: str | Path, dtype: torch.dtype = torch.float16) -> dict:
    """Write an inference-only copy of a checkpoint (weights stored as `dtype`); return its metadata."""
    load_lm(source)  # refuse, in one line, a checkpoint whose config, weights or vocabulary are unusable
    return export_checkpoint(source, destination, KIND, dtype)
