"""The unconditional handwriting model: it writes ink with no text given (the paper's §4.2).

model (HM-LSTM core, gated output, mixture head), task (training on IAM-OnDB lines), evaluate (the
paper's log-likelihood per line), generate (COPY-skipping sampling), sample (the `sample` command).
"""
