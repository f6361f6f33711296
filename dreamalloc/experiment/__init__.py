"""Experiment plumbing: training loop, evaluation protocol, checkpoints, logging and seeding.

Nothing is imported here so that ``import dreamalloc`` stays light: in particular only
``dreamalloc.experiment.logging`` touches wandb, and only when a Logger is built.

The experiment layer looks env families up in ``core.family`` (it never tests a family's name) and builds agents
from their registry. May import: core, the domain packages (through their registered families), agents, nn,
report, Hydra / OmegaConf, wandb.
"""
