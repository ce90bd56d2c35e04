"""Tiny synthesis models saved as loadable checkpoints (for the app's Write view and the write command's tests)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from handwriting_hm.hmlstm.checkpoint import checkpoint_payload, save_checkpoint
from handwriting_hm.synthesis.model import KIND, SynthesisConfig, SynthesisModel

# about IAM-OnDB's normalisation, so that a canvas's strokes in sensor units are read at a sensible scale
STATS = {"mean": [8.0, 0.0], "std": [40.0, 37.0]}


def write_tiny_synthesis_checkpoint(path: Path, alphabet: str) -> Path:
    """A 3-layer (12, 10, 8) synthesis model over `alphabet`, random weights, seed 0."""
    torch.manual_seed(0)
    config = SynthesisConfig(alphabet=alphabet, hidden_sizes=(12, 10, 8), embedding_size=12, n_mixtures=3,
                             n_window=4, initial_window_step=0.2)
    model = SynthesisModel(config)
    save_checkpoint(path, checkpoint_payload(KIND, config.to_dict(), model.state_dict(), 1.0, {"stats": STATS}))
    return path


def quarter_character_model() -> SynthesisModel:
    """A tiny synthesis model whose window moves a quarter character a point: it writes any text in about
    4 points a character and stops."""
    torch.manual_seed(0)
    model = SynthesisModel(SynthesisConfig(alphabet=" abcdefghij", hidden_sizes=(12, 10, 8), embedding_size=12,
                                           n_mixtures=3, n_window=4))
    K = model.config.n_window
    with torch.no_grad():
        model.window.weight[2 * K:].zero_()
        model.window.bias[2 * K:].fill_(math.log(0.25))
    return model


def write_quarter_character_checkpoint(path: Path) -> Path:
    """quarter_character_model saved at `path`, with offsets normalised by a std of 20 units."""
    model = quarter_character_model()
    stats = {"mean": [0.0, 0.0], "std": [20.0, 20.0]}
    save_checkpoint(path, checkpoint_payload(KIND, model.config.to_dict(), model.state_dict(), 1.0, {"stats": stats}))
    return path
