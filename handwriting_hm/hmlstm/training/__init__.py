"""The training loop's parts, one concern each; the loop itself is `handwriting_hm.hmlstm.trainer.Trainer`,
which also re-exports every public name below (clients import them from there).

    config       TrainConfig and the shared training flags
    task         TrainingTask, the protocol a model's trainer implements
    distributed  torchrun: Distributed, distributed_from_env, shard_batches, share_lines
    rng          seed_everything, capture/restore_rng_state, preserved_rng
    batches      move_to, tensors_of, with_tensors
    run_log      log.jsonl (append_log, read_log) and curves.png (plot_learning_curves)

docs/training.md ("The training loop") is the manual: what a task provides, the run folder, checkpoints,
steps and stopping, resume, several GPUs.
"""
