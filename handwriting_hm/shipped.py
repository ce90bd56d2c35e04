"""Where the shipped models are installed: paths only, so that a command's --help can name them
without loading torch. Their model cards, beside them, give the recipes."""
from __future__ import annotations

from pathlib import Path

MODELS = Path(__file__).parent / "models"
DEFAULT_MODEL = MODELS / "handwriting-default.pt"  # the unconditional HM-LSTM: models/MODEL_CARD.md
LSTM_MODEL = MODELS / "handwriting-lstm.pt"  # the LN-LSTM of the same size and budget beside it: the same card
DEFAULT_SYNTHESIS_MODEL = MODELS / "synthesis-default.pt"  # models/SYNTHESIS_MODEL_CARD.md
SHIPPED = {"default": DEFAULT_MODEL, "lstm": LSTM_MODEL, "synthesis": DEFAULT_SYNTHESIS_MODEL}


def shipped_or_path(name: str) -> Path:
    """A command's checkpoint argument: 'default', 'lstm' or 'synthesis' names a shipped model (unless a file of
    that name is here), anything else is a path."""
    path = Path(name)
    return SHIPPED[name] if name in SHIPPED and not path.exists() else path
