"""The trainer: Accelerate loop, checkpoints, signals, SLURM submission."""
