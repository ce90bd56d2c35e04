"""Where the shipped models are installed: paths only, so that a command's --help can name them
without loading torch. Their model cards, beside them, give the recipes."""
from __future__ import annotations

from pathlib import Path

MODELS = Path(__file__).parent / "models"
DEFAULT_MODEL = MODELS / "handwriting-default.pt"  # the unconditional model: models/MODEL_CARD.md
DEFAULT_SYNTHESIS_MODEL = MODELS / "synthesis-default.pt"  # models/SYNTHESIS_MODEL_CARD.md
