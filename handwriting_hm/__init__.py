"""Hierarchical Multiscale LSTM (Chung, Ahn & Bengio, ICLR 2017) for handwriting generation."""
