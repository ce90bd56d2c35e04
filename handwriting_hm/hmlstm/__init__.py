"""The HM-LSTM library: the recurrent core and what every model built on it shares.

    settings    the names the settings take, the slope schedules, StoredConfig (no torch: the parsers read them)
    cell_types  the state and output types, the boundary detector, the settings' checks
    core        HMLSTM, the reference loop that reads like the paper (and the names clients import)
    lstm        StackedLSTM, the LSTM baseline with the same interface
    dispatch    which path runs a forward pass ("auto" and why) and the call into it
    stepper     CopySkippingStepper: sampling step by step without the work of COPY rows, a hook for an extra input
    paths/      the fast paths (fused, sparse with its C loop, Triton) and what they share (buffers)
    csrc/       the C sources of the sparse loop and the few-row kernel, with their one header
    detectors   the boundary detectors' health and their alignment with events
    output      GatedOutput (paper §4.1) and SoftmaxHead
    checkpoint  the one checkpoint writer and reader
    trainer     Trainer, the training loop (exact resume, non-finite guard, schedule); re-exports training/'s names
    training/   the loop's parts: config and flags, task protocol, torchrun sharding, RNG state, batches, run log
    graphed_step  a training step replayed from a CUDA graph
    presets     named training recipes and their flags (no torch: the trainers' parsers are built from it)
    run_start   where a run starts: the parsed flags read against the preset or a checkpoint (start_from_args)
    recipe_settings  the boundary recipes' schedules and the detector and recipe flags (no torch)
    recipes     the HM-LSTM recipes written once (the rate loss, the core a config describes)
    run_lock    one training process per run folder
    device      resolve_device
    cli         one subcommand per module, user errors as one line
    archive     the prepared files' storage
    atomic      atomic file writes (no torch: data_prep imports it)

Inside the library, from the bottom up: settings; cell_types (HMLSTMLike types the model for the modules above it);
lstm, paths/ and stepper; dispatch, the one module that names every path; core, whose forward asks the
dispatch. None of them imports core.

Layering of the repository, from the bottom up:
- `handwriting_hm.hmlstm` imports nothing from the rest of the repository.
- `data_prep` imports only `handwriting_hm.hmlstm.atomic` from it.
- `lm` imports only from `handwriting_hm.hmlstm`; the handwriting modules are its other client.
- Model code never imports data_prep; only the train and evaluate entry points read prepared
  files, through `data_prep.dataset`, inside their `run`.
This file stays import-free so that `data_prep` can use `atomic` without loading torch.
"""
