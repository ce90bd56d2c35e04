"""Where the shipped language models lie (no imports: the commands' --help reads it)."""
from pathlib import Path

DEFAULT_MODEL = Path(__file__).parent / "models" / "ptb-default.pt"  # the HM-LSTM: 'default'
LSTM_MODEL = Path(__file__).parent / "models" / "ptb-lstm.pt"  # the LN-LSTM of the same size and budget: 'lstm'
SHIPPED = {"default": DEFAULT_MODEL, "lstm": LSTM_MODEL}
