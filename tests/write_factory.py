"""A tiny synthesis model with random weights, saved as a loadable checkpoint (for the app's Write view tests)."""
from __future__ import annotations

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
