"""Where the shipped language model lies (no imports: the commands' --help reads it)."""
from pathlib import Path

DEFAULT_MODEL = Path(__file__).parent / "models" / "ptb-tiny.pt"
