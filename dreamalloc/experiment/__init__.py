"""Experiment plumbing: training loop, evaluation protocol, checkpoints, logging and seeding.

Nothing is imported here so that ``import dreamalloc`` stays light: in particular only
``dreamalloc.experiment.logging`` touches wandb, and only when a Logger is built.
"""
