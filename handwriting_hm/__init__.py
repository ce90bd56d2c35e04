"""Handwriting generation with the Hierarchical Multiscale LSTM (Chung, Ahn & Bengio, ICLR 2017).

The generic HM-LSTM machinery lives in `handwriting_hm.hmlstm`; around it, the handwriting client:
`unconditional/` and `synthesis/` (one folder per model), what both share (mixture head, scoring,
normalisation), `drawing/`, and the commands. docs/architecture.md draws what imports what.
This file stays import-free so that importing `handwriting_hm.hmlstm.atomic` does not load torch.
"""
