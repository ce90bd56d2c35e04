"""Handwriting generation with the Hierarchical Multiscale LSTM (Chung, Ahn & Bengio, ICLR 2017).

The generic HM-LSTM machinery lives in `handwriting_hm.hmlstm`; the modules beside it are the
handwriting client: model, mixture head, training, evaluation, generation, drawing.
This file stays import-free so that importing `handwriting_hm.hmlstm.atomic` does not load torch.
"""
