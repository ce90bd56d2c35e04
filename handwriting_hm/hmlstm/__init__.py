"""The HM-LSTM library: the recurrent core and what every model built on it shares.

    core        HMLSTM (the reference loop), StackedLSTM, the boundary detector, slope schedules
    fused       the fused training path with a hand-written backward
    output      GatedOutput (paper §4.1) and SoftmaxHead
    checkpoint  the one checkpoint writer and reader
    trainer     Trainer, TrainConfig, TrainingTask: loop, logs, curves, exact resume, torchrun
    device      resolve_device
    cli         one subcommand per module, user errors as one line
    atomic      atomic file writes (no torch: data_prep imports it)

Layering, from the bottom up:
- `handwriting_hm.hmlstm` imports nothing from the rest of the repository.
- `data_prep` imports only `handwriting_hm.hmlstm.atomic` from it.
- `lm` imports only from `handwriting_hm.hmlstm`; the handwriting modules are its other client.
- Model code never imports data_prep; only the train and evaluate entry points read prepared
  files, through `data_prep.dataset`, inside their `run`.
This file stays import-free so that `data_prep` can use `atomic` without loading torch.
"""
